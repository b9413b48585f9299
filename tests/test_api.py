import dataclasses
import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import gan_face
from gan_face import Detector, GanFaceError, Verdict, is_synthetic
from gan_face.errors import CorruptImageError


def test_import_is_light():
    code = "import sys, gan_face; assert 'torch' not in sys.modules and 'facenet_pytorch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert set(gan_face.__all__) >= {"is_synthetic", "Detector", "Verdict", "__version__"}


def test_error_classes_are_importable_from_the_package():
    from gan_face import (
        CorruptImageError,
        GanFaceError,
        ImageNotFoundError,
        ImageTooLargeError,
        NotAnImageError,
        UnsupportedInputError,
        errors,
    )

    typed = (CorruptImageError, ImageNotFoundError, ImageTooLargeError, NotAnImageError, UnsupportedInputError)
    for error in typed:
        assert issubclass(error, GanFaceError) and error is getattr(errors, error.__name__)
    public = {name for name in vars(errors) if name.endswith("Error") and isinstance(getattr(errors, name), type)}
    assert public <= set(gan_face.__all__), public - set(gan_face.__all__)
    assert all(getattr(gan_face, name) for name in gan_face.__all__)  # every listed name resolves


def test_verdict_reason_is_the_scan_reason(tmp_path):
    """``Verdict.reason`` is the sentence of scan's ``reason`` column (examples/)."""
    import csv

    from click.testing import CliRunner
    from conftest import REPO

    from gan_face.outputs.cli import main

    out = tmp_path / "scan.csv"
    assert CliRunner().invoke(main, ["scan", str(REPO / "examples"), "-o", str(out), "-q"]).exit_code == 0
    with open(out, newline="") as handle:
        rows = {row["path"]: row for row in csv.DictReader(handle)}
    assert "astronaut.jpg" in rows
    for name, row in rows.items():
        verdict = is_synthetic(REPO / "examples" / name)
        assert verdict.reason and verdict.reason.endswith(".")
        assert verdict.reason == row["reason"], name
        assert verdict.synthetic == (row["synthetic"] == "true")


def test_same_likelihood_for_path_bytes_pil_and_array(astronaut_png):
    data = astronaut_png.read_bytes()
    pil = Image.open(io.BytesIO(data))
    array = np.asarray(Image.open(astronaut_png).convert("RGB"))
    results = [is_synthetic(x) for x in (str(astronaut_png), astronaut_png, data, pil, array)]
    assert len({r.likelihood for r in results}) == 1
    assert len({r.status for r in results}) == 1


def test_verdict_contract(detector, astronaut):
    v = detector.score(astronaut)
    assert isinstance(v, Verdict)
    assert 0.0 <= v.likelihood <= 1.0
    assert v.synthetic == (v.likelihood >= v.threshold) == bool(v)
    assert v.status == "ok"
    assert v.face is not None and v.face.landmarks.left_eye[0] < v.face.landmarks.right_eye[0]
    assert set(detector.evidence_names) == set(v.evidence)
    for name, check in v.evidence.items():
        assert check.name == name and check.explanation
        assert check.score is None or 0.0 <= check.score <= 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.likelihood = 0.5  # type: ignore[misc]
    with pytest.raises(TypeError):
        v.evidence["eyes"] = None  # type: ignore[index]
    row = v.to_dict()
    assert row["status"] == "ok" and row["face"]["landmarks"]["left_eye"]
    # a real NASA portrait, framed by a person: not flagged
    assert not v.synthetic


def test_no_face_gets_no_likelihood_when_nothing_weighed_was_measured(detector):
    flat = np.full((256, 256, 3), 120, dtype=np.uint8)
    v = detector.score(flat)
    assert v.status == "no_face" and v.face is None
    assert v.likelihood is None and not v.synthetic and not v  # the fused checks (cnn, eyes) need a face
    assert v.evidence["eyes"].score is None and v.evidence["cnn"].score is None
    assert v.evidence["background"].explanation  # the other evidence is still reported


def test_threshold_override(detector, astronaut):
    strict = is_synthetic(astronaut, threshold=0.0)
    assert strict.synthetic and strict.threshold == 0.0
    assert Detector(threshold=1.0).score(astronaut).threshold == 1.0
    with pytest.raises(ValueError):
        Detector(threshold=1.5)


def test_errors_raise_in_score_and_flow_in_batches(detector, astronaut):
    with pytest.raises(CorruptImageError, match="0 bytes"):
        detector.score(b"")
    results = list(detector.score_many([astronaut, b"", b"garbage", astronaut], batch_size=3, errors="return"))
    assert [type(r).__name__ for r in results] == ["Verdict", "CorruptImageError", "NotAnImageError", "Verdict"]
    assert results[0].likelihood == results[3].likelihood
    assert all(isinstance(r, GanFaceError) for r in results[1:3])
    with pytest.raises(GanFaceError):
        list(detector.score_many([astronaut, b""]))


def test_is_synthetic_takes_the_callers_detector(detector, astronaut):
    mine = is_synthetic(astronaut, detector=detector)
    assert mine.likelihood == detector.score(astronaut).likelihood
    with pytest.raises(ValueError, match="not both"):
        is_synthetic(astronaut, detector=detector, weights="gan-face-v2")


def test_the_old_names_still_work_for_one_release(detector, astronaut):
    v = detector.score(astronaut)
    assert v.checks is v.evidence  # Verdict.checks: the old, read-only name
    with pytest.raises(TypeError):
        v.checks["eyes"] = None  # type: ignore[index]
    with pytest.warns(DeprecationWarning, match="explain"):
        old = Detector(checks="auto", workers=1)
    assert old.explain == "auto" and old.threads == 1


def test_every_front_door_goes_through_one_pipeline(detector, astronaut):
    """score, score_many and score_stream give the same verdict; score_stream keeps each item and its image."""
    from gan_face.detector import batched

    assert [len(b) for b in batched(range(7), 3)] == [3, 3, 1]
    items = [("a", astronaut), ("broken", b"garbage"), ("b", astronaut)]
    scored = list(detector.score_stream(items, source=lambda item: item[1], batch_size=2))
    assert [s.item[0] for s in scored] == ["a", "broken", "b"]
    assert scored[1].image is None and isinstance(scored[1].result, GanFaceError)
    assert scored[0].image.shape == astronaut.shape
    one = detector.score(astronaut).likelihood
    assert scored[0].result.likelihood == scored[2].result.likelihood == one
    assert next(detector.score_many([astronaut])).likelihood == one
