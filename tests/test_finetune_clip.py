"""`gan-face finetune` on a base with a clip view (issue 30, item 4): the clip head is refitted on the base's
statistics plus the user's training images, the encoder is named and not copied, the CNN is kept unless asked,
and a run interrupted after its features were computed resumes without recomputing them."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TRAIN_EXTRA, face_tree

pytest.importorskip("torch", reason=TRAIN_EXTRA)
pytest.importorskip("sklearn", reason=TRAIN_EXTRA)

from gan_face.card import (
    DEFAULT_MODEL,
    ClipConfig,
    ClipNetwork,
    ModelCard,
    file_sha256,
    load_state_dict,
    shipped_card_path,
)
from gan_face.errors import WeightsError
from gan_face.fusion import Fusion
from gan_face.outputs.cli import main
from gan_face.training.clip_head import HeadStats, fit_stats, head_tensors, source_weights

# the encoder among the installed shipped models (what a card names by its bare name), not the source tree's copy
ENCODER = (shipped_card_path(DEFAULT_MODEL).parent / "clip-vit-b16.safetensors").resolve()
WIDTH = 768  # blocks=(11,): one CLS token
BASE_SOURCES = ("real/a", "real/b", "fake/x", "fake/y", "fake/z")


def _base_stats(rng, n_per_source=12) -> HeadStats:
    """Statistics of a base head fitted on random features of five sources (two real, three fake)."""
    sources = np.repeat(BASE_SOURCES, n_per_source)
    labels = np.array([s.startswith("fake") for s in sources], int)
    x = rng.normal(size=(len(sources), WIDTH)) + labels[:, None] * 0.3
    return fit_stats(x, labels, source_weights(sources, labels), components=16, sources=sources)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """gan-face-v2 with a clip view on the last block (a head from random features) and a fusion weighing it."""
    from safetensors.numpy import save_file

    folder = tmp_path_factory.mktemp("base")
    head = folder / "base-clip-head.safetensors"
    save_file(head_tensors(_base_stats(np.random.default_rng(0)), 0.1), str(head))
    v2 = ModelCard.load("gan-face-v2")
    fusion = Fusion(v2.fusion.features + ("clip",), v2.fusion.weights + (1.0,), v2.fusion.centers + (0.0,),
                    v2.fusion.scales + (3.0,), v2.fusion.intercept)  # fmt: skip
    clip = ClipNetwork(ClipConfig(blocks=(11,)), ENCODER, head, file_sha256(ENCODER), file_sha256(head))
    card = v2.replace(name="base-with-clip", clip=clip, fusion=fusion)
    return card.save(folder / "base-with-clip.json").path


@pytest.fixture(scope="module")
def tree(tmp_path_factory, astronaut):
    return face_tree(tmp_path_factory.mktemp("tree"), astronaut)


def _finetune(tree, base, out, *extra):
    args = ["finetune", "--real", str(tree / "real"), "--fake", str(tree / "fake"), "-o", str(out),
            "--base", str(base), "--head-emphasis", "3", *extra]  # fmt: skip
    return CliRunner().invoke(main, args)


def test_head_refit_adds_the_users_images_as_one_source_per_class_times_the_emphasis():
    from gan_face.training.finetune_clip import refit_head

    rng = np.random.default_rng(1)
    tensors = head_tensors(_base_stats(rng), 0.1)
    stats = HeadStats.from_tensors(tensors)  # as the file holds them (the basis in float16)
    card = ModelCard.load("gan-face-v2")
    user = rng.normal(size=(6, 5, WIDTH))  # 6 images x 5 variants
    labels = np.array([0, 0, 1, 1, 1, 1])
    new, info = refit_head(tensors, card, user, labels, emphasis=3.0)
    refitted = HeadStats.from_tensors(new)
    # each class grows by 3 sources' worth of the base class's weight per source (2 real, 3 fake sources)
    assert np.allclose(refitted.weight - stats.weight, 3.0 * stats.weight / [2, 3])
    assert list(refitted.sources) == [3, 4] and info["base_sources"] == {"real": 2, "fake": 3}
    # the sums are the base's plus the user's rows, weighed evenly within their class
    u = stats.project(user.reshape(-1, WIDTH))
    row_labels = np.repeat(labels, 5)
    fakes = u[row_labels == 1]
    expected = stats.first[1] + 3.0 * stats.weight[1] / 3 / len(fakes) * fakes.sum(axis=0)
    assert np.allclose(refitted.first[1], expected)
    assert np.array_equal(refitted.mean, stats.mean) and np.array_equal(refitted.basis, stats.basis)
    assert not np.allclose(new["coef"], tensors["coef"])
    assert float(new["shrinkage"][0]) == 0.1

    # a head written before stats.sources was kept: the card's clip_training names the sources
    old = {k: v for k, v in tensors.items() if k != "stats.sources"}
    named = card.with_sections(clip_training={"train_sources": list(BASE_SOURCES)})
    again, _ = refit_head(old, named, user, labels, emphasis=3.0)
    assert np.allclose(again["stats.weight"], new["stats.weight"])
    with pytest.raises(WeightsError, match="stats.sources"):
        refit_head(old, card, user, labels, emphasis=3.0)
    with pytest.raises(WeightsError, match="no statistics"):
        refit_head({k: v for k, v in tensors.items() if not k.startswith("stats.")}, card, user, labels, 3.0)


def test_finetune_refits_the_head_keeps_the_cnn_and_names_the_shipped_encoder(tree, base, tmp_path):
    out = tmp_path / "adapted.safetensors"
    result = _finetune(tree, base, out)
    assert result.exit_code == 0, result.output
    summary = result.output[result.output.index("checked the folders") : result.output.index("refitted:")]
    assert "step: clip features of the 16 training images x 5 variants" in summary
    assert "the face CNN kept as in the base model" in summary
    assert "refitted: the clip head, on the base's statistics plus 8 fake and 8 real training images x 5" in (
        result.output
    )
    base_card, card = ModelCard.load(base), ModelCard.load(out)
    raw = json.loads(out.with_suffix(".json").read_text())
    # the encoder is the shipped file, named and not copied; the head is new and beside the model
    assert raw["clip"]["encoder"] == "clip-vit-b16.safetensors" and card.clip.encoder_path.resolve() == ENCODER
    assert card.clip.encoder_sha256 == base_card.clip.encoder_sha256
    assert not list(tmp_path.glob("*clip-vit*"))
    assert card.clip.head_path == tmp_path / "adapted-clip-head.safetensors"
    assert card.clip.head_sha256 != base_card.clip.head_sha256
    assert card.clip.config == base_card.clip.config
    # the CNN is the base's, bit for bit
    assert file_sha256(out) == base_card.face.sha256 == card.face.sha256
    # the new head's statistics: the base's plus the user's 16 training images, 3 sources' worth per class
    old, new = (HeadStats.from_tensors(load_state_dict(c.clip.head_path)) for c in (base_card, card))
    assert np.allclose(new.weight - old.weight, 3.0 * old.weight / [2, 3])
    assert list(new.sources) == [3, 4]
    _, tensors = card.load_clip_state()
    assert not np.allclose(tensors["coef"], load_state_dict(base_card.clip.head_path)["coef"])
    # too few reals to recalibrate: the base's fusion and threshold kept; what was done is in the card
    assert card.fusion == base_card.fusion and card.threshold == base_card.threshold
    section = card.sections["finetune"]
    assert section["clip_head"]["emphasis"] == 3.0 and section["best_epoch"] is None
    assert not (tmp_path / "adapted.partial").exists() and not list(tmp_path.glob("*staging*"))
    # a fine-tuned model can be fine-tuned again: its head keeps the statistics
    again = _finetune(tree, out, tmp_path / "twice.safetensors")
    assert again.exit_code == 0, again.output
    twice = HeadStats.from_tensors(ModelCard.load(tmp_path / "twice.safetensors").load_clip_state()[1])
    assert list(twice.sources) == [4, 5] and np.allclose(twice.weight - new.weight, 3.0 * new.weight / [3, 4])


def test_interrupted_after_the_features_resumes_without_recomputing_them(tree, base, tmp_path, monkeypatch):
    from gan_face.training import finetune as finetune_module
    from gan_face.training import finetune_clip

    one_sitting = _finetune(tree, base, tmp_path / "one.safetensors")
    assert one_sitting.exit_code == 0, one_sitting.output

    out = tmp_path / "two.safetensors"
    with monkeypatch.context() as patch:  # Ctrl-C once every feature is computed, before the head is solved

        def interrupt(*args, **kwargs):
            raise KeyboardInterrupt

        patch.setattr(finetune_module, "refit_head", interrupt)
        stopped = _finetune(tree, base, out)
    assert stopped.exit_code == 130, stopped.output
    assert "the clip features of 16 training images are kept" in stopped.output and "--resume" in stopped.output
    assert "--head-emphasis 3.0" in stopped.output
    with monkeypatch.context() as patch:  # the resumed run must not compute a single feature again

        def recomputed(*args, **kwargs):
            raise AssertionError("clip features computed again on resume")

        patch.setattr(finetune_clip, "_save_chunk", recomputed)
        resumed = _finetune(tree, base, out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    a, b = (load_state_dict(tmp_path / f"{n}-clip-head.safetensors") for n in ("one", "two"))
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    assert file_sha256(out) == file_sha256(tmp_path / "one.safetensors")


def test_cnn_fine_tune_is_opt_in_for_a_base_with_a_clip_view(tree, base, tmp_path):
    out = tmp_path / "both.safetensors"
    result = _finetune(tree, base, out, "--cnn", "--epochs", "1", "--samples-per-epoch", "32")
    assert result.exit_code == 0, result.output
    assert "refitted: the clip head" in result.output and "refitted: the face CNN (epochs: 1" in result.output
    card = ModelCard.load(out)
    assert card.face.sha256 != ModelCard.load(base).face.sha256
    assert card.clip.head_sha256 != ModelCard.load(base).clip.head_sha256
