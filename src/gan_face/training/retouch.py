"""Portrait retouching, as an augmentation: polish is not evidence of a generator.

Studio and stock portraits, corporate headshots and phone "beauty" modes reach a profile photo after the camera:
smoothed skin, sharpened eyes, graded colour, a vignette, a flat studio backdrop. Diffusion faces look polished
too, so a view fitted on raw camera photos against generated faces learns "polished" as "generated" and flags
retouched real people (issue 36: retouched stock portraits were the real photos v3 flagged). Fitting on retouched
copies of the training photos, of both classes as with JPEG and resizing, takes that shortcut away.

:func:`retouch` applies a random recipe of the usual operations, each drawn independently (at least one always):

* **skin smoothing** by frequency separation inside a feathered face ellipse: the mid band (blotches, pores) is
  taken out, the finest grain kept or not (a retoucher keeps it, a beauty filter does not);
* **sharpening** (unsharp mask) of the whole picture;
* **colour grading**: a warm or cool tint, contrast, saturation, lifted blacks;
* **vignette**: darkened corners;
* **backdrop**: everything outside a feathered head-and-shoulders shape replaced by a flat or graded studio colour.

The landmarks (MTCNN order: eyes, nose, mouth corners) place the face; the geometry never changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter
from scipy.ndimage import gaussian_filter

from .composites import feather

#: Studio backdrop colours (RGB): white, light and mid grey, charcoal, blue-grey, navy, beige.
BACKDROPS = ((242, 242, 240), (205, 205, 205), (150, 152, 155), (60, 62, 66), (112, 128, 150), (40, 52, 84),
             (214, 200, 178))  # fmt: skip


@dataclass(frozen=True)
class Retouch:
    """How often each operation is drawn, and its strength range."""

    p_smooth: float = 0.8
    smooth_strength: tuple[float, float] = (0.5, 1.0)  # share of the mid band taken out
    p_keep_grain: float = 0.5
    p_sharpen: float = 0.5
    sharpen_percent: tuple[int, int] = (40, 160)
    p_grade: float = 0.7
    p_vignette: float = 0.35
    vignette_depth: tuple[float, float] = (0.12, 0.4)
    p_backdrop: float = 0.3


def retouch(image: np.ndarray, points: np.ndarray, rng: np.random.Generator, settings: Retouch = Retouch()):
    """``image`` (H x W x 3 uint8) after a random retouching recipe; ``points``: its five landmarks (5 x 2)."""
    drawn = {
        name: rng.random() < p
        for name, p in (
            ("smooth", settings.p_smooth),
            ("sharpen", settings.p_sharpen),
            ("grade", settings.p_grade),
            ("vignette", settings.p_vignette),
            ("backdrop", settings.p_backdrop),
        )
    }
    if not any(drawn.values()):
        drawn["smooth"] = True
    out = image.astype(np.float32)
    eye_distance = max(float(np.linalg.norm(points[1] - points[0])), 4.0)
    if drawn["backdrop"]:
        out = _backdrop(out, points, eye_distance, rng)
    if drawn["smooth"]:
        out = _smooth_skin(out, points, eye_distance, rng, settings)
    if drawn["grade"]:
        out = _grade(out, rng)
    if drawn["vignette"]:
        out = _vignette(out, rng.uniform(*settings.vignette_depth))
    result = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    if drawn["sharpen"]:
        sharpen = ImageFilter.UnsharpMask(
            radius=rng.uniform(0.8, 2.5), percent=int(rng.integers(*settings.sharpen_percent)), threshold=2
        )
        result = np.asarray(Image.fromarray(result).filter(sharpen))
    return result


def _ellipse(shape, centre, radii) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (((xx - centre[0]) / radii[0]) ** 2 + ((yy - centre[1]) / radii[1]) ** 2) <= 1.0


def _feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    return feather(mask.astype(np.float32), sigma)[:, :, None]


def _face_mask(shape, points: np.ndarray, eye_distance: float) -> np.ndarray:
    """A feathered ellipse over the face's skin (forehead to chin), the eyes and mouth left out as a retoucher
    leaves them."""
    centre = points.mean(axis=0) + [0.0, -0.1 * eye_distance]
    skin = _ellipse(shape, centre, (1.05 * eye_distance, 1.45 * eye_distance))
    for eye in points[:2]:
        skin &= ~_ellipse(shape, eye, (0.3 * eye_distance, 0.18 * eye_distance))
    mouth = points[3:5].mean(axis=0)
    skin &= ~_ellipse(shape, mouth, (0.45 * eye_distance, 0.2 * eye_distance))
    return _feather(skin, 0.1 * eye_distance)


def _smooth_skin(out, points, eye_distance, rng, settings: Retouch) -> np.ndarray:
    """Frequency separation in the skin: the band between a fine and a coarse blur is taken out where it is faint
    (blotches, pores) and kept where it is strong (edges of the nose, jaw, wrinkles' outlines), as a surface blur
    does; the finest grain is kept or not."""
    fine = gaussian_filter(out, (0.6, 0.6, 0)) if rng.random() < settings.p_keep_grain else out
    coarse_sigma = max(eye_distance * rng.uniform(0.035, 0.09), 1.0)
    coarse = gaussian_filter(out, (coarse_sigma, coarse_sigma, 0))
    band = fine - coarse
    faint = np.exp(-((np.abs(band).mean(axis=2, keepdims=True) / rng.uniform(8, 20)) ** 2))
    smoothed = out - rng.uniform(*settings.smooth_strength) * faint * band
    mask = _face_mask(out.shape[:2], points, eye_distance)
    return out + mask * (smoothed - out)


def _grade(out, rng) -> np.ndarray:
    """A tint (warm or cool), lifted blacks, then contrast and saturation, as a colour grade does."""
    tint = 1.0 + rng.uniform(-0.06, 0.06) * np.array([1.0, 0.2, -1.0], np.float32)
    lift = rng.uniform(0, 18)
    out = lift + out * tint * (255 - lift) / 255
    image = Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.85, 1.25))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.75, 1.3))
    return np.asarray(image).astype(np.float32)


def _vignette(out, depth: float) -> np.ndarray:
    height, width = out.shape[:2]
    yy, xx = np.ogrid[:height, :width]
    radius = ((xx - width / 2) / (width / 2)) ** 2 + ((yy - height / 2) / (height / 2)) ** 2
    return out * (1.0 - depth * np.clip(radius / 2, 0, 1))[:, :, None]


def _backdrop(out, points, eye_distance, rng) -> np.ndarray:
    """Outside a feathered head-and-shoulders shape, a flat or vertically graded studio colour."""
    height, width = out.shape[:2]
    centre = points.mean(axis=0) + [0.0, -0.35 * eye_distance]
    head = _ellipse((height, width), centre, (1.7 * eye_distance, 2.3 * eye_distance))
    chin = points[3:5, 1].mean() + 0.6 * eye_distance
    yy, xx = np.ogrid[:height, :width]
    # shoulders widen below the chin, as a trapezoid
    half_width = 1.0 * eye_distance + np.clip(yy - chin, 0, None) * 1.3
    body = (yy >= chin) & (np.abs(xx - centre[0]) <= half_width)
    person = _feather(head | body, 0.15 * eye_distance)
    colour = np.array(BACKDROPS[int(rng.integers(len(BACKDROPS)))], np.float32)
    colour = colour + rng.normal(0, 8, 3).astype(np.float32)
    ramp = np.linspace(1.0 + rng.uniform(0, 0.15), 1.0 - rng.uniform(0, 0.2), height, dtype=np.float32)
    backdrop = np.clip(colour[None, None, :] * ramp[:, None, None], 0, 255)
    return person * out + (1.0 - person) * backdrop
