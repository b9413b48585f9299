"""`gan-face finetune` trusted with a user's time (issue 29): the folders are checked and described before any
training, every epoch is checkpointed, Ctrl-C says what was kept, and --resume ends where one sitting would."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TRAIN_EXTRA, face_tree
from PIL import Image

from gan_face.outputs.cli import main

pytest.importorskip("torch", reason=TRAIN_EXTRA)
pytest.importorskip("sklearn", reason=TRAIN_EXTRA)


@pytest.fixture(scope="module")
def tree(tmp_path_factory, astronaut):
    """The tiny labelled tree, plus one file that is not a readable image and one image without a face."""
    root = face_tree(tmp_path_factory.mktemp("tree"), astronaut)
    (root / "real" / "framed" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(root / "real" / "framed" / "grey.png")
    return root


def _finetune(tree, out, *extra):
    args = ["finetune", "--real", str(tree / "real"), "--fake", str(tree / "fake"), "-o", str(out),
            "--base", "gan-face-v2", "--epochs", "2", "--samples-per-epoch", "64", *extra]  # fmt: skip
    # the CNN fine-tune (epochs, checkpoints): gan-face-v2 has no clip view, so its fine-tune trains the CNN
    return CliRunner().invoke(main, args)


def _comparable(card_path):
    """A card without what legitimately differs between two runs: its name, paths, timings."""
    card = json.loads(card_path.read_text())
    for key in ("name", "description"):
        card.pop(key, None)
    section = card["finetune"]
    section.pop("minutes")
    for record in section["history"]:
        record.pop("seconds")
    return json.dumps(card, sort_keys=True).replace(card_path.stem, "OUT")


def test_interrupted_run_resumed_ends_as_one_uninterrupted_run(tree, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from gan_face.training import loop

    one_sitting = _finetune(tree, tmp_path / "one_sitting.safetensors")
    assert one_sitting.exit_code == 0, one_sitting.output
    # the pre-check is said before any training: counts, faces, the files skipped and why, the reals warning
    check = one_sitting.output.index("checked the folders")
    assert check < one_sitting.output.index("training:")
    summary = one_sitting.output[check : one_sitting.output.index("training:")]
    assert "real photos" in summary and "14 image files, 12 with a face found" in summary
    assert "1 without a face" in summary and "1 unreadable" in summary
    assert "broken.jpg" in summary and "grey.png" in summary
    assert "too few real photos to recalibrate" in summary and "needs at least 100" in summary
    assert not (tmp_path / "one_sitting.partial").exists()  # removed once the model is written

    # Ctrl-C right after the first epoch's checkpoint is written
    save = loop.Checkpoint.save

    def save_then_interrupt(self, epoch, *args):
        save(self, epoch, *args)
        raise KeyboardInterrupt

    out = tmp_path / "two_sittings.safetensors"
    with monkeypatch.context() as patch:
        patch.setattr(loop.Checkpoint, "save", save_then_interrupt)
        stopped = _finetune(tree, out)
    assert stopped.exit_code == 130, stopped.output
    assert "1 of 2 epochs had finished" in stopped.output and "two_sittings.partial" in stopped.output
    assert "--resume" in stopped.output and "Aborted!" not in stopped.output
    assert not out.exists()

    # the same folder without --resume, or --resume with other settings, is refused and names why
    again = _finetune(tree, out)
    assert again.exit_code == 2 and "--resume" in again.output
    other = _finetune(tree, out, "--resume", "--val-fraction", "0.5")
    assert other.exit_code == 2 and "--val-fraction: 0.3 in the saved run, 0.5 now" in other.output

    resumed = _finetune(tree, out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    a, b = load_file(str(tmp_path / "one_sitting.safetensors")), load_file(str(out))
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key].numpy(), b[key].numpy()), key
    assert _comparable(tmp_path / "one_sitting.json") == _comparable(out.with_suffix(".json"))
    assert not (tmp_path / "two_sittings.partial").exists()


def test_a_folder_without_usable_images_is_refused_before_training(tree, tmp_path):
    empty = tmp_path / "fake"
    empty.mkdir()
    (empty / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n nothing")
    args = ["finetune", "--real", str(tree / "real"), "--fake", str(empty), "-o", str(tmp_path / "x.safetensors")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "need at least 10 usable fake images, found 0 (of 1 image files; 1 unreadable" in result.output
    assert "training:" not in result.output
    assert not (tmp_path / "x.partial").exists()


def test_resume_without_an_unfinished_run_is_refused(tree, tmp_path):
    result = _finetune(tree, tmp_path / "none.safetensors", "--resume")
    assert result.exit_code == 2 and "nothing to resume" in result.output
