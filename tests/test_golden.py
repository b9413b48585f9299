"""The shipped model against stored verdicts on constructed images: a refactor must not move a likelihood.

The images are built here from scikit-image's astronaut photo and cat (no ../shared/data needed). The stored
values were written before the package was re-laid into floors (issue 11).
"""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

GOLDEN = Path(__file__).parent / "golden" / "verdicts_v1.json"


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
    }


@pytest.mark.parametrize("name", list(json.loads(GOLDEN.read_text())["verdicts"]))
def test_shipped_model_reproduces_its_golden_verdicts(detector, name):
    expected = json.loads(GOLDEN.read_text())["verdicts"][name]
    verdict = detector.score(constructed_images()[name])
    assert verdict.status == expected["status"]
    if expected["likelihood"] is None:
        assert verdict.likelihood is None
    else:
        assert abs(round(verdict.likelihood, 6) - expected["likelihood"]) <= 1e-6
    for check, score in expected["checks"].items():
        got = verdict.checks[check].score
        assert (got is None) == (score is None), check
        if score is not None:
            assert abs(round(got, 6) - score) <= 1e-6, check
