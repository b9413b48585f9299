"""scripts/evaluate.py end to end on a tiny constructed data tree."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TRAIN_EXTRA
from PIL import Image

pytest.importorskip("torch", reason=TRAIN_EXTRA)
pytest.importorskip("sklearn", reason=TRAIN_EXTRA)

from gan_face.align import FaceAligner, align_face
from gan_face.checks.eyes import TEMPLATE_MEAN
from gan_face.training.conditions import CONDITIONS, apply_condition, condition_with_transform, plan_condition
from gan_face.training.metrics import bootstrap_auc, clopper_pearson, metrics, ranking_metrics, tpr_at_fpr

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "evaluate.py"


def load_script():
    spec = importlib.util.spec_from_file_location("evaluate_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory, astronaut):
    """real/: the astronaut framed by a person (several crops); fake/: her face re-framed on the StyleGAN
    template."""
    root = tmp_path_factory.mktemp("tree")
    face = FaceAligner().detect(astronaut)[0]
    eyes_and_mouth = TEMPLATE_MEAN.reshape(3, 2)
    # a 5-point template for align_face that puts eyes and mouth where StyleGAN does
    template = np.array(
        [
            eyes_and_mouth[0],
            eyes_and_mouth[1],
            (eyes_and_mouth[0] + eyes_and_mouth[2]) / 2,
            eyes_and_mouth[2] - [0.06, 0],
            eyes_and_mouth[2] + [0.06, 0],
        ]
    )
    for i, side in enumerate((256, 320, 384, 448)):
        fake = align_face(astronaut, face.landmarks, side, template)
        path = root / "fake" / "templated" / f"f{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(fake).save(path)
    for i, (x0, y0, x1, y1) in enumerate(
        [(0, 0, 512, 512), (80, 0, 400, 360), (100, 20, 380, 300), (40, 0, 460, 420)]
    ):
        path = root / "real" / "framed" / f"r{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(astronaut[y0:y1, x0:x1]).save(path, quality=90)
    return root


def test_evaluate_script_on_tiny_tree(tiny_tree, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert load_script().main([str(tiny_tree), "--conditions", "clean,avatar", "--json", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "== clean" in printed and "== avatar" in printed and "fake/templated" in printed
    report = json.loads(out.read_text())
    assert report["n_images"] == 8 and set(report["conditions"]) == {"clean", "avatar"}
    clean = report["conditions"]["clean"]
    assert clean["by_source"]["all"]["n_real"] == 4 and clean["by_source"]["all"]["n_fake"] == 4
    assert set(clean["by_source"]) == {"all", "fake/templated", "real/framed"}
    assert "templated" in clean["by_generator"]
    # eyes moved onto the StyleGAN template are exactly what the eye check looks for
    assert clean["check_auc"]["eyes"]["all"] == 1.0
    for values in clean["by_source"].values():
        assert 0.0 <= values["fpr_at_threshold"] <= 1.0 and 0.0 <= values["auc"] <= 1.0


def test_conditions_are_seeded_and_move_landmarks_consistently(astronaut):
    for condition in CONDITIONS:
        a, matrix = condition_with_transform(astronaut, condition, seed=3)
        assert np.array_equal(a, apply_condition(astronaut, condition, seed=3))
        assert matrix.shape == (2, 3)
        # the plan's geometry alone says where landmarks go and how big the result is, without the pixels
        plan = plan_condition(astronaut.shape[1], astronaut.shape[0], condition, seed=3)
        assert np.array_equal(plan.matrix, matrix) and plan.size == (a.shape[1], a.shape[0])
    avatar = apply_condition(astronaut, "avatar", seed=0)
    assert avatar.shape == (400, 400, 3)
    cropped, matrix = condition_with_transform(astronaut, "cropped", seed=1)
    assert cropped.shape == astronaut.shape
    # a point in the original maps into the conditioned image where the same content is
    point = np.array([256.0, 256.0])
    moved = matrix[:, :2] @ point + matrix[:, 2]
    x, y = np.round(moved).astype(int)
    assert np.abs(cropped[y, x].astype(int) - astronaut[256, 256].astype(int)).max() < 40


def test_metrics_on_known_scores():
    labels = np.r_[np.zeros(1000, int), np.ones(100, int)]
    scores = np.r_[np.linspace(0, 0.5, 1000), np.linspace(0.45, 1.0, 100)]
    result = metrics(labels, scores, threshold=0.5)
    assert 0.99 < result["auc"] < 1.0
    assert result["fpr_at_threshold"] == pytest.approx(0.001)
    assert tpr_at_fpr(labels, scores, 0.01) == pytest.approx(np.mean(scores[1000:] > scores[989]))


def test_clopper_pearson_on_known_intervals():
    # 0 of 50: the upper end solves (1 - p) ** 50 = 0.025; 5 of 100: 1.64% to 11.28% (published tables)
    assert clopper_pearson(0, 50) == (0.0, pytest.approx(1 - 0.025 ** (1 / 50), abs=1e-12))
    assert clopper_pearson(5, 100) == (pytest.approx(0.01643, abs=1e-5), pytest.approx(0.11283, abs=1e-5))
    assert clopper_pearson(50, 50) == (pytest.approx(0.025 ** (1 / 50), abs=1e-12), 1.0)
    assert clopper_pearson(0, 0) == (0.0, 1.0)
    narrow, wide = clopper_pearson(5, 100, confidence=0.9), clopper_pearson(5, 100)
    assert wide[0] < narrow[0] < 0.05 < narrow[1] < wide[1]


def test_bootstrap_auc_holds_the_auc_and_is_seeded():
    rng = np.random.default_rng(3)
    labels = np.r_[np.ones(40, int), np.zeros(70, int)]
    scores = rng.normal(size=110) + labels
    low, high = bootstrap_auc(labels, scores)
    assert low < ranking_metrics(labels, scores)["auc"] < high
    assert [low, high] == [0.6406, 0.8429]  # as before it left scripts/clip_matrix.py: same seed, same rounds
    assert bootstrap_auc(labels, scores, seed=1) != [low, high]
