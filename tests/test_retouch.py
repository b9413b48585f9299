"""Retouching as an augmentation (polish is not evidence): each operation does what it says, where it says, and
never moves the face; and the clip matrix's folds include the new families and the Flux group."""

import numpy as np
import pytest
from conftest import TRAIN_EXTRA
from skimage import data as skimage_data

pytest.importorskip("torch", reason=TRAIN_EXTRA)  # gan_face.training refuses to import without its extra
pytest.importorskip("sklearn", reason=TRAIN_EXTRA)

from scipy.ndimage import gaussian_filter

from gan_face.align import FaceAligner
from gan_face.training.clip_matrix import folds
from gan_face.training.pools import EXTRA_VARIANTS, extra_variants
from gan_face.training.retouch import Retouch, retouch

ONLY = {name: 0.0 for name in ("p_smooth", "p_sharpen", "p_grade", "p_vignette", "p_backdrop")}


@pytest.fixture(scope="module")
def astronaut():
    image = skimage_data.astronaut()
    face = FaceAligner().detect(image)[0]
    return image, face.landmarks.to_array()


def _mid_band(image: np.ndarray) -> np.ndarray:
    grey = image.astype(np.float32).mean(axis=2)
    return np.abs(gaussian_filter(grey, 0.6) - gaussian_filter(grey, 3.0))


def test_the_same_seed_gives_the_same_picture_and_another_seed_another(astronaut):
    image, points = astronaut
    first = retouch(image, points, np.random.default_rng(3))
    assert first.shape == image.shape and first.dtype == np.uint8
    assert np.array_equal(first, retouch(image, points, np.random.default_rng(3)))
    assert not np.array_equal(first, retouch(image, points, np.random.default_rng(4)))
    assert not np.array_equal(first, image)


def test_skin_smoothing_takes_faint_detail_out_of_the_face_only(astronaut):
    image, points = astronaut
    smoothed = retouch(image, points, np.random.default_rng(0), Retouch(**{**ONLY, "p_smooth": 1.0}))
    eye_distance = np.linalg.norm(points[1] - points[0])
    centre = points.mean(axis=0)
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    face = ((xx - centre[0]) / eye_distance) ** 2 + ((yy - centre[1]) / (1.2 * eye_distance)) ** 2 < 1
    before = _mid_band(image)
    faint = face & (before < 6)  # skin texture, not the edges of the features
    assert _mid_band(smoothed)[faint].mean() < 0.85 * before[faint].mean()
    assert np.array_equal(smoothed[:60, -60:], image[:60, -60:])  # far from the face: untouched


def test_a_backdrop_replaces_the_corners_with_a_flat_colour_and_keeps_the_face(astronaut):
    image, points = astronaut
    out = retouch(image, points, np.random.default_rng(1), Retouch(**{**ONLY, "p_backdrop": 1.0}))
    corner = out[:40, -40:].astype(np.float32)
    assert corner.std(axis=(0, 1)).max() < 6 < image[:40, -40:].astype(np.float32).std(axis=(0, 1)).max()
    nose = tuple(points[2].astype(int)[::-1])
    assert np.abs(out[nose].astype(int) - image[nose].astype(int)).max() <= 1


def test_retouching_never_moves_the_face(astronaut):
    image, points = astronaut
    aligner = FaceAligner()
    for seed in range(3):
        found = aligner.detect(retouch(image, points, np.random.default_rng(seed)))[0].landmarks.to_array()
        assert np.abs(found - points).max() < 0.1 * np.linalg.norm(points[1] - points[0])


def test_extra_variants_are_named_and_an_unknown_name_is_refused(astronaut):
    image, points = astronaut
    for name in EXTRA_VARIANTS:
        make_variant, spec = extra_variants(name)
        variant, moved = make_variant(image, points, 0, 0)
        assert variant.ndim == 3 and moved.shape == points.shape and spec["variants"]
    with pytest.raises(ValueError, match="ffhq"):
        extra_variants("beauty")


def test_the_matrix_leaves_out_each_new_family_and_both_flux_sources_together():
    table = folds()
    assert table["flux-dev"] == (("fake/flux_dev_occupations_maximuspowers",), True)
    assert table["sdxl-turbo"] == (("fake/sdxl_turbo_occupations_maximuspowers",), True)
    members, diffusion = table["flux (both sources)"]
    assert set(members) == {"fake/headshots_flux_invigo", "fake/flux_dev_occupations_maximuspowers"} and diffusion
    assert table["stylegan2"][1] is False
