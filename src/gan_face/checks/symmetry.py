"""Left-right asymmetry check: do the two sides of the face agree the way a real face in real light does?

What it reads, each side against the other (left/right as the viewer sees them):

* **Iris colour.** Both irises of a real person are nearly always the same colour; GAN faces often give each
  eye its own (colour distance of the two irises, highlights and whites excluded).
* **Corneal highlights.** Both eyes of a real photo mirror the same light source, so the bright reflection
  sits at the same place in each eye; GAN faces often put it in different places, or in one eye only.
* **Eyeglass frames and the eye region.** Edge structure around one eye against the mirrored other eye: GAN
  glasses often change shape, thickness or style from one side to the other.
* **Ears and earrings.** The regions beside the face, mirrored: GAN faces wear mismatched earrings.
* **The halves overall.** The mirrored halves of the face.

Differences that a turned head causes by itself are discounted: the mirrored comparisons are divided by an
allowance that grows with the yaw measured from the landmarks, and past about 35 degrees of yaw the check
declines to judge. The features are combined by weights fitted on the training sources
(``scripts/fit_checks.py``).

What fools it: low resolution (a face under ~60 px has no readable irises or highlights), heavy JPEG, hair or
a hand covering one side, real heterochromia, two light sources, deliberately asymmetric glasses or earrings;
and a GAN face that happens to be symmetric passes.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from PIL import Image

from ..align import Face
from ..result import CheckResult
from ._face_frame import FaceFrame, correlation, gradient_magnitude, sample_patch, to_grey
from ._weights import check_weights

FEATURES = ("iris_colour", "highlight_offset", "highlight_strength", "eye_region", "ears", "halves")
#: Direction each measurement may push the score when fitted: more asymmetry never makes a face more real.
SIGNS = ("+", "+", "+", "+", "+", "+")
#: Past this yaw (nose off the eyes' midline, in interocular distances) the sides are not comparable.
MAX_YAW = 0.35
EYE_HALF = 0.26  # eye patch: half-width in interocular distances
EYE_SIZE = 32


def symmetry_features(image: np.ndarray, face: Face) -> Optional[dict[str, float]]:
    """The raw asymmetry measurements (bigger means more asymmetric), or ``None`` for a turned head."""
    frame = FaceFrame.of(face)
    if abs(frame.yaw) > MAX_YAW or frame.unit < 4:
        return None
    pil = Image.fromarray(image)
    allowance = 1.0 + 4.0 * abs(frame.yaw)  # how much mirrored differences may grow with yaw alone
    left_eye = sample_patch(pil, frame, -0.5, 0.0, EYE_HALF, EYE_SIZE)
    right_eye = sample_patch(pil, frame, 0.5, 0.0, EYE_HALF, EYE_SIZE)
    (iris_l, spread_l), (iris_r, spread_r) = _iris_colour(left_eye), _iris_colour(right_eye)
    spot_l, strength_l = _highlight(left_eye)
    spot_r, strength_r = _highlight(right_eye)

    wide_l = to_grey(sample_patch(pil, frame, -0.5, 0.0, 0.5, 32))
    wide_r = to_grey(sample_patch(pil, frame, 0.5, 0.0, 0.5, 32))[:, ::-1]
    ear_l = to_grey(sample_patch(pil, frame, -1.15, 0.75, 0.35, 24))
    ear_r = to_grey(sample_patch(pil, frame, 1.15, 0.75, 0.35, 24))[:, ::-1]
    face_patch = to_grey(sample_patch(pil, frame, 0.0, 0.45, 0.95, 48))
    return {
        # relative to the colour noise inside each iris, so a small, noisy face is not called heterochromatic
        "iris_colour": float(np.linalg.norm(iris_l - iris_r) / (spread_l + spread_r + 0.01)),
        "highlight_offset": float(np.linalg.norm(spot_l - spot_r)) * min(strength_l, strength_r) ** 0.5,
        "highlight_strength": abs(strength_l - strength_r),
        "eye_region": (1.0 - correlation(gradient_magnitude(wide_l), gradient_magnitude(wide_r))) / allowance,
        "ears": _mirrored_difference(ear_l, ear_r) / allowance,
        "halves": (1.0 - correlation(face_patch[:, :24], face_patch[:, 24:][:, ::-1])) / allowance,
    }


def _iris_colour(eye: np.ndarray) -> tuple[np.ndarray, float]:
    """Mean chromaticity of the iris: a disc around the eye point, without highlights, whites and skin."""
    size = eye.shape[0]
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    radius = 0.09 / (2 * EYE_HALF) * size  # an iris is ~0.09 interocular distances in radius
    pixels = eye[(xx**2 + yy**2) <= radius**2].astype(np.float64)
    brightness = pixels.mean(axis=1)
    keep = brightness <= np.percentile(brightness, 70)  # drop highlights and bits of sclera
    pixels = pixels[keep] if keep.sum() >= 3 else pixels
    colours = np.c_[pixels / (pixels.sum(axis=1, keepdims=True) + 1e-6), pixels.mean(axis=1) / 255.0]
    # mean chromaticity and darkness, and their spread (the noise of this estimate)
    return colours.mean(axis=0), float(np.linalg.norm(colours.std(axis=0)) / np.sqrt(len(colours)))


def _highlight(eye: np.ndarray) -> tuple[np.ndarray, float]:
    """Position of the brightest spot in the eye (fraction of the patch) and how far it stands out."""
    grey = to_grey(eye)
    size = grey.shape[0]
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    inner = (xx**2 + yy**2) <= (0.1 / (2 * EYE_HALF) * size) ** 2  # the iris: a corneal reflection lies on it
    values = np.where(inner, grey, -np.inf)
    peak = np.unravel_index(np.argmax(values), values.shape)
    strength = float((grey[peak] - np.median(grey[inner])) / 255.0)
    return np.array([xx[peak], yy[peak]]) / size, max(strength, 0.0)


def _mirrored_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Difference of two patches after removing each one's mean and contrast (lighting differs by side)."""
    a = (a - a.mean()) / (a.std() + 8.0)
    b = (b - b.mean()) / (b.std() + 8.0)
    return float(np.abs(a - b).mean())


_PLAIN_WORDS = {
    "iris_colour": "the two irises differ in colour",
    "highlight_offset": "the light reflections sit in different places in the two eyes",
    "highlight_strength": "one eye reflects the light much more than the other",
    "eye_region": "the eye regions (glasses frames, lids, brows) differ between the sides",
    "ears": "the ear regions (earrings, hair) differ between the sides",
    "halves": "the two halves of the face differ",
}


def symmetry_check(image: np.ndarray, face: Optional[Face]) -> CheckResult:
    """Score left-right disagreement of the face (see the module docstring)."""
    if face is None:
        return CheckResult("symmetry", None, "No face found, so its two sides cannot be compared.")
    features = symmetry_features(image, face)
    if features is None:
        return CheckResult(
            "symmetry", None, "The head is turned too far (or the face is too small) to compare its two sides."
        )
    evidence = check_weights("symmetry")
    terms = evidence.terms(features)
    score = evidence.score(features)
    strongest = evidence.features[int(np.argmax(terms))]
    if score >= 0.65:
        explanation = f"Left and right disagree: {_PLAIN_WORDS[strongest]}."
    elif score >= 0.5:
        explanation = f"Left and right differ slightly: {_PLAIN_WORDS[strongest]} (weak evidence)."
    else:
        explanation = "Left and right sides agree (eyes, reflections, eye region and ears match)."
    frame = FaceFrame.of(face)
    regions = (
        ("left eye", frame.box(-0.5, 0.0, 0.5)),
        ("right eye", frame.box(0.5, 0.0, 0.5)),
        ("left ear", frame.box(-1.15, 0.75, 0.35)),
        ("right ear", frame.box(1.15, 0.75, 0.35)),
    )
    return CheckResult("symmetry", score, explanation, regions, {**features, "yaw": frame.yaw})
