"""The shipped models against stored verdicts on constructed images: a refactor must not move a likelihood.

The images are built here from scikit-image's astronaut photo and cat, and one of the SD3 portraits of
``examples/`` (no ../shared/data needed). v1's stored
values were written before the package was re-laid into floors (issue 11); v2's when it was trained (issue 10).
"""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan_face import Detector
from gan_face._math import score_logit
from gan_face.card import DEFAULT_MODEL, shipped_card_path

GOLDEN_DIR = Path(__file__).parent / "golden"
#: model name -> its stored verdicts; the default model and every older model that stays loadable
GOLDEN = {
    "gan-face-v1": GOLDEN_DIR / "verdicts_v1.json",
    "gan-face-v2": GOLDEN_DIR / "verdicts_v2.json",
    "gan-face-v3": GOLDEN_DIR / "verdicts_v3.json",
    "gan-face-v4": GOLDEN_DIR / "verdicts_v4.json",
}
CASES = [
    (model, name)
    for model, path in GOLDEN.items()
    if path.exists()  # a missing file fails test_every_shipped_model_has_golden_verdicts, not the collection
    for name in json.loads(path.read_text())["verdicts"]
]


#: How far a stored probability may move, in log-odds: CPUs differ in their float kernels (AVX2 and AVX-512 sum
#: in other orders), which moved v1's likelihoods by up to 0.0009 in log-odds between two Xeon machines; any
#: change to a model, a crop or a check moves them by far more.
LOG_ODDS_TOLERANCE = 0.01
#: The clip view runs int8 matrix products whose OpenVINO kernels differ by CPU (AVX-512 VNNI on the machine that
#: wrote v3's values, AVX2 alone on an AMD EPYC here): its score moved by up to 0.16 in log-odds there, and v3's
#: fused likelihood by up to 0.10 (the CNNs' float scores not at all). Still far below what any change to a
#: model, a crop or a check moves.
INT8_LOG_ODDS_TOLERANCE = 0.25
#: Stored values are rounded to 6 decimals, which is all a probability near 0 or 1 can be compared to.
ROUNDING = 1e-6


def _same_probability(got: float, stored: float, tolerance: float = LOG_ODDS_TOLERANCE) -> bool:
    return abs(got - stored) <= ROUNDING or abs(score_logit(got) - score_logit(stored)) <= tolerance


def _jpeg(array: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def constructed_images() -> dict[str, np.ndarray]:
    from skimage import data

    astronaut = data.astronaut()
    pil = Image.fromarray(astronaut)
    return {
        "astronaut": astronaut,
        "astronaut_avatar": _jpeg(np.asarray(pil.resize((400, 400), Image.LANCZOS)), 85),
        "astronaut_crop": np.ascontiguousarray(astronaut[40:400, 60:420]),
        "astronaut_gray": np.repeat(np.asarray(pil.convert("L"))[:, :, None], 3, axis=2),
        "astronaut_mirror": np.ascontiguousarray(astronaut[:, ::-1]),
        "astronaut_small": np.asarray(pil.resize((160, 160), Image.LANCZOS)),
        "astronaut_rot10": np.asarray(pil.rotate(10, resample=Image.BICUBIC)),
        "cat": data.chelsea(),
        "noise": np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8),
        # a generated face (an SD3 portrait of examples/, CC0) 60% over the astronaut: gan-face-v4's first look
        # leaves it in its band and the second look decides it
        "sd3_over_astronaut": np.round(0.6 * _example("male_512_75.jpg", (512, 512)) + 0.4 * astronaut).astype(
            np.uint8
        ),
    }


def _example(name: str, size: tuple[int, int]) -> np.ndarray:
    image = Image.open(Path(__file__).resolve().parents[1] / "examples" / name).convert("RGB")
    return np.asarray(image.resize(size)).astype(np.float64)


@pytest.fixture(scope="module")
def detectors() -> dict:
    return {model: Detector(weights=shipped_card_path(model)) for model in GOLDEN}


def test_every_shipped_model_has_golden_verdicts():
    assert DEFAULT_MODEL in GOLDEN and all(path.exists() for path in GOLDEN.values())


@pytest.mark.parametrize("model, name", CASES)
def test_shipped_model_reproduces_its_golden_verdicts(detectors, model, name):
    expected = json.loads(GOLDEN[model].read_text())["verdicts"][name]
    assert json.loads(GOLDEN[model].read_text())["model"] == model
    verdict = detectors[model].score(constructed_images()[name])
    int8 = INT8_LOG_ODDS_TOLERANCE if "clip" in verdict.evidence else LOG_ODDS_TOLERANCE
    assert verdict.status == expected["status"]
    if expected["likelihood"] is None:
        assert verdict.likelihood is None
    else:
        assert _same_probability(verdict.likelihood, expected["likelihood"], int8)
    for check, score in expected["checks"].items():
        got = verdict.evidence[check].score
        assert (got is None) == (score is None), check
        if score is not None:
            assert _same_probability(
                got, score, int8 if check in ("clip", "second_look") else LOG_ODDS_TOLERANCE
            ), check


def write_golden(model: str, note: str) -> None:
    """Store ``model``'s verdicts on the constructed images (once, when a model is trained; never to make a
    failing test pass)."""
    detector = Detector(weights=shipped_card_path(model))
    verdicts = {}
    for name, image in constructed_images().items():
        verdict = detector.score(image)
        verdicts[name] = {
            "likelihood": None if verdict.likelihood is None else round(verdict.likelihood, 6),
            "status": verdict.status,
            "checks": {k: None if r.score is None else round(r.score, 6) for k, r in verdict.evidence.items()},
        }
    payload = {"model": model, "note": note, "verdicts": verdicts}
    GOLDEN[model].write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":  # python tests/test_golden.py MODEL "NOTE"
    import sys

    write_golden(sys.argv[1], sys.argv[2])
