"""The training wing on constructed data (no ../shared/data): refitting one fusion term, and a whole fine-tune."""

import json

import numpy as np
import pytest
from conftest import face_tree

from gan_face.card import ModelCard
from gan_face.fusion import Fusion
from gan_face.training.datasets import Sample
from gan_face.training.fitting import refit_one


def _rows(rng, n: int, conditions=("clean", "avatar")) -> list[dict]:
    rows = []
    for condition in conditions:
        for i in range(n):
            label = i % 2
            cnn = float(np.clip(rng.normal(0.75 if label else 0.3, 0.15), 0.01, 0.99))
            eyes = float(np.clip(rng.normal(0.5, 0.2), 0.01, 0.99))
            sample = Sample(
                f"/x/{i}.jpg", label, "fake/a" if label else "real/b", "g" if label else "real", str(i)
            )
            rows.append({"sample": sample, "condition": condition, "scores": {"cnn": cnn, "eyes": eyes}})
    return rows


def test_refit_one_refits_only_that_term_and_caps_the_fpr_in_every_condition():
    base = Fusion(("cnn", "eyes"), (3.0, 0.3), (-0.1, -8.0), (3.9, 6.3), 0.27)
    rows = _rows(np.random.default_rng(0), 400)
    refitted, threshold = refit_one(base, "cnn", rows, max_fpr=0.01)
    assert refitted.weights[1] == base.weights[1] and refitted.centers[1] == base.centers[1]
    assert refitted.weights[0] != base.weights[0] and refitted.weights[0] > 0
    for condition in ("clean", "avatar"):
        reals = [r for r in rows if r["condition"] == condition and r["sample"].label == 0]
        flagged = sum(refitted.likelihood(r["scores"]) >= threshold for r in reals)
        assert flagged <= 0.01 * len(reals)


@pytest.fixture(scope="module")
def tree(tmp_path_factory, astronaut):
    return face_tree(tmp_path_factory.mktemp("tree"), astronaut)


def test_finetune_on_a_tiny_tree_writes_a_loadable_calibrated_model(tree, tmp_path):
    from gan_face import Detector
    from gan_face.training.finetune import FinetuneSettings, finetune

    settings = FinetuneSettings(epochs=1, samples_per_epoch=64, variants=1, val_fraction=0.34)
    out = tmp_path / "adapted.safetensors"
    report = finetune(tree / "real", tree / "fake", out, settings=settings, cache_dir=tmp_path / "cache")
    card = ModelCard.load(out)
    assert card.name == "adapted" and card.weights_path == out
    assert card.load_state_dict()  # sha256 matches the file written
    assert 0.0 <= card.threshold <= 1.0
    section = card.sections["finetune"]
    assert section["base"] == "gan-face-v1" and section["counts"]["real_train"] >= 6
    assert set(report.before_after["new generator (held out)"]) >= {"before", "after"}
    assert "before" in report.table() and "after" in report.table()
    assert not list(tmp_path.glob("*staging*"))  # nothing half-written is left behind
    verdict = Detector(weights=out).score(str(next((tree / "fake" / "templated").iterdir())))
    assert 0.0 <= verdict.likelihood <= 1.0
    json.dumps(card.to_dict())
