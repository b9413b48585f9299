"""A score depends on its image only: the same likelihood alone, in batches of 8, 32 or 64, in any order and
with several workers (issue 12). Constructed images only: scikit-image's astronaut cropped, resized, mirrored and
re-encoded, close-ups where the face overflows the frame (face boxes with negative coordinates: those let
facenet-pytorch's batched detection suppress one image's box by a neighbour's and move it by 20 px), and a few
faceless images among them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image


def constructed_images(n: int = 36) -> list[np.ndarray]:
    from skimage import data

    astronaut, rng = data.astronaut(), np.random.default_rng(12)
    images = []
    for i in range(n):
        if i % 3 == 0:  # a close-up: the face overflows the frame, its box has negative coordinates
            top, left, side = int(rng.integers(60, 130)), int(rng.integers(150, 200)), int(rng.integers(110, 170))
            close_up = Image.fromarray(astronaut[top : top + side, left : left + side])
            images.append(np.asarray(close_up.resize((400, 400), Image.BILINEAR)))
            continue
        top, left = int(rng.integers(0, 120)), int(rng.integers(0, 150))
        height, width = int(rng.integers(260, 512 - top + 1)), int(rng.integers(260, 512 - left + 1))
        crop = Image.fromarray(astronaut[top : top + height, left : left + width])
        scale = float(rng.uniform(0.45, 1.1))
        crop = crop.resize((max(64, round(width * scale)), max(64, round(height * scale))), Image.BILINEAR)
        if i % 2:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        if i % 3 == 1:
            buffer = io.BytesIO()
            crop.save(buffer, format="JPEG", quality=int(rng.integers(60, 95)))
            crop = Image.open(buffer).convert("RGB")
        images.append(np.asarray(crop))
    faceless = [data.chelsea(), data.coffee(), np.random.default_rng(0).integers(0, 256, (120, 200, 3), np.uint8)]
    for index, image in zip((5, 17, 29), faceless):  # a cat, a cup of coffee, noise
        if index < n:
            images[index] = image
    return images


@pytest.fixture(scope="module")
def auto_detector():
    from gan_face import Detector

    return Detector(explain="auto")


def _summary(verdicts):
    return [
        (v.likelihood, v.status, None if v.face is None else v.face.landmarks.to_array(), v.face is None)
        for v in verdicts
    ]


def _assert_same(got, expected, what):
    for index, ((p, status, marks, noface), (q, status0, marks0, noface0)) in enumerate(zip(got, expected)):
        assert status == status0 and noface == noface0, f"{what}: image {index}"
        if p is None or q is None:
            assert p is q, f"{what}: image {index}"
        else:
            assert abs(p - q) <= 1e-4, f"{what}: image {index}: likelihood {p} vs {q} alone"
        if marks is not None:
            assert np.abs(marks - marks0).max() <= 1e-3, f"{what}: image {index}: landmarks moved"


def test_same_likelihood_in_any_batch_and_order(auto_detector):
    images = constructed_images()
    alone = _summary([auto_detector.score(image) for image in images])
    assert sum(status == "ok" for _, status, _, _ in alone) >= 25  # the astronaut is found in most of them
    for batch_size in (8, 32, 64):
        batched = _summary(auto_detector.score_many(images, batch_size=batch_size))
        _assert_same(batched, alone, f"batch size {batch_size}")
    order = np.random.default_rng(1).permutation(len(images))
    shuffled = _summary(auto_detector.score_many([images[i] for i in order], batch_size=32))
    _assert_same([shuffled[list(order).index(i)] for i in range(len(images))], alone, "shuffled")
    auto_detector.threads = 2
    try:
        parallel = _summary(auto_detector.score_many(images, batch_size=8))
    finally:
        auto_detector.threads = 1
    _assert_same(parallel, alone, "two threads")


def test_face_boxes_do_not_depend_on_the_batch():
    """The cause, at its source: facenet-pytorch's batched detection lets images suppress each other's boxes."""
    from gan_face.align import FaceAligner

    aligner, images = FaceAligner(), constructed_images(24)
    alone = [aligner.detect(image) for image in images]
    together = aligner.detect_batch(images)
    for faces, faces0 in zip(together, alone):
        assert len(faces) == len(faces0)
        for face, face0 in zip(faces, faces0):
            assert face.box == face0.box and face.landmarks == face0.landmarks
