import numpy as np
import pytest
from conftest import needs_references

from gan_face.align import (
    CROP_TEMPLATE,
    Face,
    FaceAligner,
    Landmarks,
    align_face,
    has_other_prominent_face,
    similarity_transform,
)


@pytest.fixture(scope="module")
def aligner():
    return FaceAligner()


def test_finds_the_astronauts_face_with_viewer_left_right(aligner, astronaut):
    faces = aligner.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert face.confidence > 0.99
    x0, y0, x1, y1 = face.box
    assert 150 < x0 < x1 < 300 and 40 < y0 < y1 < 200  # her face, upper middle of the frame
    lm = face.landmarks
    # as seen by the viewer: left_eye is nearer the image's left edge
    assert lm.left_eye[0] < lm.nose[0] < lm.right_eye[0]
    assert lm.mouth_left[0] < lm.mouth_right[0]
    assert max(lm.left_eye[1], lm.right_eye[1]) < lm.nose[1] < min(lm.mouth_left[1], lm.mouth_right[1])
    assert 35 < lm.interocular < 55


def test_faceless_images_and_mixed_sizes_in_one_batch(aligner, astronaut):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(300, 200, 3), dtype=np.uint8)
    flat = np.full((64, 640, 3), 200, dtype=np.uint8)
    tiny = np.zeros((1, 1, 3), dtype=np.uint8)
    results = aligner.detect_batch([noise, astronaut, flat, tiny, astronaut[:300, 100:400]])
    assert [len(r) > 0 for r in results] == [False, True, False, False, True]
    # the face found in the crop is the same face, shifted by the crop's offset
    full, cropped = results[1][0].landmarks.to_array(), results[4][0].landmarks.to_array()
    assert np.abs(cropped + [100, 0] - full).max() < 4


def test_aligned_crop_puts_landmarks_on_the_template(aligner, astronaut):
    face = aligner.detect(astronaut)[0]
    crop = align_face(astronaut, face.landmarks, size=160)
    assert crop.shape == (160, 160, 3) and crop.dtype == np.uint8
    again = aligner.detect(crop)[0].landmarks.to_array()
    assert np.abs(again / 160 - CROP_TEMPLATE).max() < 0.04  # within the detector's own jitter


def test_aligned_crop_at_the_edge_mirrors_instead_of_black():
    image = np.full((120, 120, 3), 200, dtype=np.uint8)
    points = CROP_TEMPLATE * 100 + [-20, -20]  # a face whose crop reaches 20 px past the top-left corner
    crop = align_face(image, Landmarks.from_array(points), size=100)
    assert crop.shape == (100, 100, 3)
    assert crop.min() >= 195  # the border is mirrored image, not a black frame


def test_similarity_transform_recovers_a_known_transform():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, size=(5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -3.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = (scale * rot @ src.T).T + shift
    matrix = similarity_transform(src, dst)
    assert np.allclose(matrix[:, :2], scale * rot) and np.allclose(matrix[:, 2], shift)


def test_multiple_faces_rule():
    def face(size, confidence=0.99):
        return Face((0, 0, size, size), confidence, Landmarks.from_array(np.zeros((5, 2))))

    assert not has_other_prominent_face([face(100)])
    assert not has_other_prominent_face([face(100), face(20)])  # a small face in the background
    assert not has_other_prominent_face([face(100), face(80, confidence=0.5)])
    assert has_other_prominent_face([face(100), face(70)])


@needs_references
def test_our_nms_makes_torchvisions_decisions():
    """``_mtcnn.nms`` replaces torchvision's (whose import cost seconds of start-up): same boxes kept, same order,
    ties in score included."""
    import torch
    from torchvision.ops import nms as torchvision_nms

    from gan_face._mtcnn import nms

    rng = np.random.default_rng(0)
    for trial in range(200):
        k = int(rng.integers(1, 60))
        corner, size = rng.uniform(-20, 150, (k, 2)), rng.uniform(0, 60, (k, 2))
        boxes = np.hstack([corner, corner + size]).astype(np.float32)
        scores = rng.choice([0.7, 0.9, 0.95, 1.0], k) if trial % 2 else rng.uniform(0, 1, k)
        scores = scores.astype(np.float32)
        for threshold in (0.5, 0.7):
            expected = torchvision_nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold).numpy()
            assert np.array_equal(nms(boxes, scores, threshold), expected)


def test_scoring_imports_neither_torch_nor_facenet_pytorch():
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from gan_face.align import FaceAligner; from skimage import data\n"
        "assert FaceAligner().detect(data.astronaut())\n"
        "assert not {'torch', 'torchvision', 'facenet_pytorch'} & set(sys.modules), sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
