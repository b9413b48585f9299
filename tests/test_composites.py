"""Composites for the evidence map, built from constructed pictures: the truth is in [0, 1], feathered, and marks
the region that came from the generated picture."""

import numpy as np
import pytest
from conftest import TRAIN_EXTRA
from skimage import data as skimage_data

pytest.importorskip("torch", reason=TRAIN_EXTRA)  # gan_face.training refuses to import without its extra
pytest.importorskip("sklearn", reason=TRAIN_EXTRA)

from gan_face.training.composites import (
    box_mask,
    cell_fractions,
    feather,
    head_ellipse,
    make_composite,
    square_mask,
)
from gan_face.training.datasets import Sample

REAL = Sample("astronaut.png", 0, "real/test", "real", "real/test/astronaut")
FAKE = Sample("noise.png", 1, "fake/test", "noise", "fake/test/noise")


def _pictures():
    astronaut = skimage_data.astronaut()
    noise = np.random.default_rng(0).integers(0, 256, size=astronaut.shape, dtype=np.uint8)
    return astronaut, noise


@pytest.mark.parametrize("host, donor", [(REAL, FAKE), (FAKE, REAL)])
def test_square_composite_marks_the_generated_pixels(host, donor):
    astronaut, noise = _pictures()
    images = {REAL: astronaut, FAKE: noise}
    c = make_composite(host, donor, "square", seed=3, host_image=images[host], donor_image=images[donor])
    assert c.image.shape == (400, 400, 3) and c.image.dtype == np.uint8
    assert c.fraction.shape == (400, 400)
    assert 0.0 <= c.fraction.min() and c.fraction.max() <= 1.0
    generated = c.fraction > 0.5
    assert 0.10 < (c.fraction if host is REAL else 1 - c.fraction).mean() < 0.40  # a 40-55% side square
    # noise is where the truth says generated: local variance far higher there than in the astronaut's pixels
    grey = c.image.astype(float).mean(axis=2)
    roughness = np.abs(np.diff(grey, axis=1))[:, :399]
    inside, outside = roughness[generated[:, :399]].mean(), roughness[~generated[:, :399]].mean()
    assert inside > 2 * outside
    # feathered: values strictly between 0 and 1 along the edge
    assert ((c.fraction > 0.05) & (c.fraction < 0.95)).sum() > 400


def test_whole_picture_is_all_one_class():
    astronaut, noise = _pictures()
    real = make_composite(REAL, None, "whole", seed=1, host_image=astronaut)
    fake = make_composite(FAKE, None, "whole", seed=1, host_image=noise)
    assert real.region == fake.region == "whole"
    assert real.fraction.max() == 0.0 and fake.fraction.min() == 1.0


def test_face_region_without_aligner_falls_back_to_a_square():
    astronaut, noise = _pictures()
    c = make_composite(REAL, FAKE, "face", seed=5, host_image=astronaut, donor_image=noise)
    assert c.region == "square"


def test_masks():
    rng = np.random.default_rng(0)
    square = square_mask(200, rng)
    side = np.sqrt(square.sum())
    assert 0.40 * 200 - 1 <= side <= 0.55 * 200 + 1
    soft = feather(square, 4.0)
    assert 0.0 <= soft.min() and soft.max() <= 1.0 and ((soft > 0) & (soft < 1)).any()
    box = box_mask(100, (10, 20, 30, 60))
    assert box.sum() == 20 * 40 and box[30, 20] == 1.0
    head = head_ellipse(100, (40, 40, 60, 60))
    assert head[47, 50] == 1.0 and head[0, 0] == 0.0
    cells = cell_fractions(np.pad(np.ones((200, 200), np.float32), ((0, 200), (0, 200))), 4)
    assert cells.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_donor_must_be_the_other_class():
    astronaut, _ = _pictures()
    with pytest.raises(ValueError):
        make_composite(REAL, REAL, "square", seed=0, host_image=astronaut, donor_image=astronaut)
