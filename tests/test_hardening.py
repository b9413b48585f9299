"""Nothing lost, nothing misleading (issue 13): each test reproduces one way a user was misled or lost a file."""

import csv
import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO, encode, face_tree, needs_training, png_bomb
from PIL import Image

from gan_face.card import ModelCard
from gan_face.outputs.cli import main


@pytest.fixture(scope="module")
def faces(tmp_path_factory, astronaut):
    """Six small avatars (a02 broken) for the report tests."""
    folder = tmp_path_factory.mktemp("faces")
    for i in range(6):
        crop = astronaut[10 * i : 400 + 10 * i, 20 : 420 - 5 * i]
        Image.fromarray(np.ascontiguousarray(crop)).resize((220, 220)).save(folder / f"a{i:02d}.jpg")
    return folder


def _rows(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))
    return [json.loads(line) for line in path.read_text().splitlines()]


# 1. fine-tuning on a small set ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_finetune(tmp_path_factory, astronaut):
    """`gan-face finetune` as a user runs it, on 12 + 12 faces (far too few to set a 1% FPR threshold)."""
    root = face_tree(tmp_path_factory.mktemp("small"), astronaut)
    out = tmp_path_factory.mktemp("out") / "adapted.safetensors"
    result = CliRunner().invoke(
        main, ["finetune", "--real", str(root / "real"), "--fake", str(root / "fake"), "-o", str(out),
               "--base", "gan-face-v2", "--epochs", "1", "--samples-per-epoch", "64"],
    )  # fmt: skip
    return result, out


@needs_training
def test_small_finetune_keeps_the_base_threshold_and_says_why(small_finetune):
    result, out = small_finetune
    assert result.exit_code == 0, result.output
    shipped = ModelCard.load("gan-face-v2")  # the fine-tune's base
    adapted = ModelCard.load(out)
    assert adapted.threshold == shipped.threshold and adapted.fusion == shipped.fusion
    assert "needs at least 100" in result.output and "kept" in result.output  # the warning, with the numbers
    assert f"threshold {shipped.threshold:.4f}" in result.output  # the threshold is printed
    assert "95% interval" in result.output  # the expected FPR with its interval
    assert "training:" in result.output and "epoch 1/1" in result.output  # progress was shown


@needs_training
def test_finetuned_card_carries_its_own_evaluation_and_readable_weights(small_finetune):
    _, out = small_finetune
    card = ModelCard.load(out)
    assert "ablation" not in card.sections and "fusion_fit" not in card.sections
    assert card.sections["evaluation"]["before_after"]["new generator (held out)"]["after"]["n_real"] >= 1
    assert card.sections["finetune"]["threshold"]["how"].startswith("the base model's")
    assert oct(out.stat().st_mode & 0o777) == oct(out.with_suffix(".json").stat().st_mode & 0o777)
    # the base model's frame CNN (not fine-tuned) is copied beside the new model, unchanged: it stands alone
    assert card.frame.weights_path == out.with_name("adapted-frame.safetensors")
    assert card.frame.sha256 == ModelCard.load("gan-face-v2").frame.sha256 and card.frame.weights_path.exists()


@needs_training
def test_a_refused_finetune_leaves_nothing_behind(tmp_path, monkeypatch, astronaut):
    import tempfile

    from gan_face.errors import TrainingDataError
    from gan_face.training.finetune import finetune

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    root = face_tree(tmp_path / "tree", astronaut, n=12)
    for extra in sorted((root / "fake" / "templated").iterdir())[3:]:
        extra.unlink()  # 3 fakes: too few, and the error says how many were found
    with pytest.raises(TrainingDataError, match=r"need at least 10 usable fake images, found 3 \(of 3"):
        finetune(root / "real", root / "fake", tmp_path / "x.safetensors")
    assert not list(tmp_path.glob("gan-face-finetune-*"))  # never a fixed shared path
    assert not (tmp_path / "x.partial").exists()  # the run's cache goes with its refusal


@needs_training
def test_refitted_threshold_is_never_silently_lowered(tmp_path, astronaut):
    from gan_face.training.finetune import FinetuneSettings, finetune

    root = face_tree(tmp_path / "tree", astronaut)
    settings = FinetuneSettings(
        epochs=1, samples_per_epoch=64, variants=1, val_fraction=0.5, min_calibration_reals=1
    )
    # the CNN fine-tune's calibration (gan-face-v2 has no clip view; v3's head step is guarded the same way)
    report = finetune(
        root / "real", root / "fake", tmp_path / "a.safetensors", base="gan-face-v2", settings=settings
    )
    assert report.calibration.startswith("the CNN's calibration and the threshold refitted")
    base = ModelCard.load("gan-face-v2")
    assert report.threshold >= base.threshold or report.warnings == []
    if any("below the base model's" in w for w in report.warnings):
        assert report.threshold == base.threshold


# 2. --resume keeps input order and the summary counts the whole report -----------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_resume_retries_errors_in_place_and_counts_the_whole_report(faces, tmp_path, fmt):
    folder = tmp_path / "f"
    folder.mkdir()
    for path in faces.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    good = (folder / "a02.jpg").read_bytes()
    (folder / "a02.jpg").write_bytes(b"broken")
    out = tmp_path / f"r.{fmt}"
    args = ["scan", str(folder), "-o", str(out), "--threshold", "0"]
    assert CliRunner().invoke(main, args).exit_code == 1
    assert [r["path"] for r in _rows(out)] == [f"a{i:02d}.jpg" for i in range(6)]
    (folder / "a02.jpg").write_bytes(good)  # fixed: a resume of the finished report tries it again
    again = CliRunner().invoke(main, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    rows = _rows(out)
    assert [r["path"] for r in rows] == [f"a{i:02d}.jpg" for i in range(6)]  # a02 back in its place
    assert not any(r["error"] for r in rows)
    assert "6 flagged" in again.output and "6 scored" in again.output  # the whole report, not this run


def test_resume_of_an_interrupted_report_with_error_rows_keeps_order(faces, tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    for path in faces.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "r.jsonl"
    assert CliRunner().invoke(main, ["scan", str(folder), "-o", str(out), "-q"]).exit_code == 0
    lines = out.read_text().splitlines()
    broken = json.loads(lines[1])
    broken.update(likelihood=None, error="a01.jpg: was unreadable when first scanned")
    # as a killed scan leaves it: rows 0-3 written (row 1 an error), 4-5 missing
    (tmp_path / "r.jsonl.partial").write_text("\n".join([lines[0], json.dumps(broken), *lines[2:4]]) + "\n")
    out.unlink()
    assert CliRunner().invoke(main, ["scan", str(folder), "-o", str(out), "-q", "--resume"]).exit_code == 0
    assert [r["path"] for r in _rows(out)] == [f"a{i:02d}.jpg" for i in range(6)]


# 3. nothing found is dropped silently ---


def test_links_loops_and_odd_folders_become_rows_and_warnings(faces, tmp_path, monkeypatch):
    folder = tmp_path / "f"
    (folder / "sub").mkdir(parents=True)
    (folder / "good.jpg").write_bytes((faces / "a00.jpg").read_bytes())
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")  # dangling
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")  # a link to itself
    (folder / "x.jpg").mkdir()  # a folder named like an image
    (folder / "notes.txt").write_text("hello")
    (folder / "sub" / "deep.jpg").write_bytes((faces / "a01.jpg").read_bytes())
    (folder / "sub" / "back").symlink_to(folder, target_is_directory=True)  # a folder loop
    (folder / "locked").mkdir()
    (folder / "locked" / "hidden.jpg").write_bytes((faces / "a02.jpg").read_bytes())
    real_scandir = os.scandir

    def scandir(path):  # as for a folder the user may not read (root reads everything, so it is simulated)
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    flat = CliRunner().invoke(main, ["scan", str(folder), "-o", str(tmp_path / "flat.csv")])
    assert flat.exit_code == 1
    rows = {r["path"]: r for r in _rows(tmp_path / "flat.csv")}
    assert set(rows) == {"gone.jpg", "good.jpg", "loop.jpg", "x.jpg"}
    assert "broken symbolic link" in rows["gone.jpg"]["error"] and "loop" in rows["loop.jpg"]["error"]
    assert "folder named like an image" in rows["x.jpg"]["error"] and not rows["good.jpg"]["error"]
    assert "skipped 1 files that are not images: notes.txt" in flat.output
    assert "skipped 2 subfolders" in flat.output and "--recursive" in flat.output
    deep = CliRunner().invoke(main, ["scan", str(folder), "-r", "-o", str(tmp_path / "deep.csv")])
    assert deep.exit_code == 1
    rows = {r["path"]: r for r in _rows(tmp_path / "deep.csv")}
    assert "folder cannot be read" in rows["locked"]["error"]
    assert "loop" in rows["sub/back"]["error"] and not rows["sub/deep.jpg"]["error"]


# 4. a report that could not be written is refused before any work ---


@pytest.mark.parametrize(
    "output, message",
    [("missing/r.csv", "does not exist"), ("r.txt", "cannot tell the report format"), (".", "is a directory")],
)
def test_unwritable_or_unknown_reports_are_refused_up_front(faces, tmp_path, output, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["scan", str(faces), "-o", output])
    assert result.exit_code == 2 and message in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback


# 5. no face, no likelihood --------------------------------------------------------------------------------------


def test_an_image_without_a_face_has_no_likelihood_anywhere(tmp_path, detector):
    from skimage import data

    folder = tmp_path / "f"
    folder.mkdir()
    Image.fromarray(data.chelsea()).save(folder / "cat.png")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "dot.png")
    verdict = detector.score(folder / "cat.png")
    assert verdict.likelihood is None and not verdict.synthetic and verdict.status == "no_face"
    for suffix in ("csv", "jsonl", "html"):
        out = tmp_path / f"r.{suffix}"
        assert (
            CliRunner().invoke(main, ["scan", str(folder), "-o", str(out), "-q", "--threshold", "0"]).exit_code
            == 0
        )
        if suffix == "html":
            page = out.read_text()
            assert page.count("no likelihood (nothing to weigh)") == 2 and "0 flagged" in page
            continue
        for row in _rows(out):
            assert row["likelihood"] in ("", None) and row["synthetic"] in ("false", False)
            assert row["status"] == "no_face" and "no likelihood is given" in row["reason"]


# 6. weights errors: short, no torch noise, not framed as usage errors ---


@needs_training
def test_wrong_shape_weights_get_a_short_message(faces, tmp_path):
    import torch
    from safetensors.torch import save_file

    shipped = ModelCard.load()
    state = {k: torch.from_numpy(v).float() for k, v in shipped.load_state_dict().items()}
    state["_fc.weight"] = torch.zeros(2, 1280)
    weights = tmp_path / "odd.safetensors"
    save_file(state, str(weights))
    shipped.with_weights(weights).save(weights.with_suffix(".json"))
    result = CliRunner().invoke(main, ["scan", str(faces / "a00.jpg"), "--weights", str(weights)])
    assert result.exit_code == 2 and "cannot load the model" in result.output and "Usage:" not in result.output
    assert "_fc.weight (2, 1280) instead of (1, 1280)" in result.output and len(result.output) < 600


@needs_training  # the refusal is torch's weights_only loader's; test_scoring_needs_no_torch covers no torch
def test_a_pickle_is_refused_without_torch_noise(faces, tmp_path):
    import pickle

    weights = tmp_path / "evil.pth"
    weights.write_bytes(pickle.dumps({"_fc.weight": [1.0]}, protocol=4))
    card = ModelCard.load()
    card = card.replace(face=dataclasses.replace(card.face, weights_path=weights, sha256=None))
    card.save(weights.with_suffix(".json"))
    done = subprocess.run(
        [sys.executable, "-m", "gan_face.outputs.cli", "scan", str(faces / "a00.jpg"), "--weights", str(weights)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "refused" in done.stderr
    assert "file an issue" not in done.stderr and "Usage:" not in done.stderr


# 7. decompression bombs: the advice is one a command-line user can follow ---


def test_bomb_advice_names_max_pixels_and_the_cli_lifts_pillows_limit(tmp_path, monkeypatch):
    from gan_face.errors import ImageTooLargeError
    from gan_face.io import load_image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the CLI raises it
    bomb = tmp_path / "big.png"
    bomb.write_bytes(png_bomb(15_000, 15_000))  # 225 MP: above Pillow's own refusal (2 x 89 MP)
    with pytest.raises(ImageTooLargeError, match="--max-pixels"):
        load_image(bomb, max_pixels=None)
    result = CliRunner().invoke(main, ["scan", str(bomb), "--max-pixels", "300000000", "-q"])
    assert result.exit_code == 1
    assert "MAX_IMAGE_PIXELS" not in result.output and "decompression bomb" not in result.output


# 8. the README's first command can be run twice ------------------------------------------------------------------


def test_readme_first_command_reruns_and_its_report_is_ignored_by_git(tmp_path):
    readme = (REPO / "README.md").read_text()
    block = readme.split("```bash", 1)[1].split("```", 1)[0]
    first = block.strip().splitlines()[0].split("#")[0]
    scan = shlex.split(first.split("&&", 1)[1])
    assert scan[:2] == ["gan-face", "scan"]
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "a.png").write_bytes(encode(Image.new("RGB", (64, 64)), "PNG"))
    # the venv's gan-face, whether or not the venv is activated
    env = dict(os.environ, PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    for _ in range(2):
        done = subprocess.run(scan, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    ignored = subprocess.run(["git", "check-ignore", "-q", "scan.csv"], cwd=REPO, check=False)
    assert ignored.returncode == 0


PORTRAITS = ("female_512_67.jpg", "female_512_96.jpg", "male_512_75.jpg")


def test_the_quick_start_flags_the_shipped_portraits_and_not_the_real_photo(tmp_path):
    """examples/ ships the real photo and the three CC0 Stable Diffusion 3 portraits its README names (the one
    exception the data's README allows): the first scan a newcomer runs flags the portraits, and only them."""
    import hashlib

    assert sorted(p.name for p in (REPO / "examples").iterdir()) == ["README.md", "astronaut.jpg", *PORTRAITS]
    listing = (REPO / "examples" / "README.md").read_text()
    for name in PORTRAITS:
        digest = hashlib.sha256((REPO / "examples" / name).read_bytes()).hexdigest()
        assert f"`{digest[:8]}...{digest[-6:]}`" in listing, name
    out = tmp_path / "scan.csv"
    result = CliRunner().invoke(main, ["scan", str(REPO / "examples"), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    rows = {row["path"]: row for row in _rows(out)}
    assert {name: row["synthetic"] for name, row in rows.items()} == {
        "astronaut.jpg": "false",
        **dict.fromkeys(PORTRAITS, "true"),
    }
    assert rows["astronaut.jpg"]["verdict"] == "likely a camera photo"
    assert all(rows[name]["verdict"] == "likely generated" for name in PORTRAITS)


@pytest.mark.data
def test_the_shipped_portraits_are_the_shared_datas_own(shared_data):
    """The portraits in examples/ are byte for byte the CC0 files of ../shared/data/fake/sd3_fakerjs."""
    source = shared_data / "fake" / "sd3_fakerjs"
    for name in PORTRAITS:
        assert (REPO / "examples" / name).read_bytes() == (source / name).read_bytes(), name


# 9. fine-tuning without the training extras says so at once ------------------------------------------------------


def _without(modules: tuple[str, ...]) -> str:
    """Python source that makes ``modules`` look not installed, as in a venv that holds only the core."""
    return (
        "import sys, importlib.util\n"
        f"BLOCKED = {set(modules)!r}\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "_find_spec = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name in BLOCKED else _find_spec(name, *a)\n"
    )


@pytest.mark.parametrize("missing", [("sklearn",), ("torch", "torchvision")])
def test_finetune_without_training_extras_names_the_extra_up_front(tmp_path, missing):
    code = _without(missing) + (
        "from gan_face.outputs.cli import main\n"
        f"main(['finetune', '--real', {str(tmp_path)!r}, '--fake', {str(tmp_path)!r}, '-o', "
        f"{str(tmp_path / 'x.safetensors')!r}])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1 and 'pip install "gan-face[train]"' in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    named = {"sklearn": "scikit-learn", "torch": "torch"}[missing[0]]
    listed = re.search(r"\(([^()]*) not installed\)", done.stderr)  # in the light install, both are missing
    assert listed and named in listed.group(1).split(", "), done.stderr


def test_scoring_needs_no_torch(tmp_path):
    """A core install (``pip install .``) has no torch: the quick-start scan, its HTML report and network view,
    and the Python API all run without it, and a torch weights file is refused with the extra to install."""
    examples = REPO / "examples"
    code = _without(("torch", "torchvision", "facenet_pytorch", "sklearn")) + (
        "from gan_face import is_synthetic, WeightsError\n"
        "from gan_face.card import load_state_dict\n"
        "from gan_face.outputs.cli import main\n"
        f"verdict = is_synthetic({str(examples / 'astronaut.jpg')!r})\n"
        "assert verdict.likelihood is not None and verdict.reason, verdict\n"
        f"open({str(tmp_path / 'w.pt')!r}, 'wb').close()\n"
        "try:\n"
        f"    load_state_dict({str(tmp_path / 'w.pt')!r})\n"
        "except WeightsError as error:\n"
        "    assert 'gan-face[train]' in str(error), error\n"
        "else:\n"
        "    raise AssertionError('a .pt file loaded without torch')\n"
        "try:\n"
        f"    main(['scan', {str(examples)!r}, '-o', {str(tmp_path / 'r.html')!r}, '-q', '--summary'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "assert 'torch' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r.html").stat().st_size > 0


# 10. a CPU-only machine is told how to avoid the CUDA build ---


def test_readme_says_how_to_install_the_cpu_only_torch():
    readme = (REPO / "README.md").read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme and "CPU-only" in readme
