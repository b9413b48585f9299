"""Eye-position check: do the face's landmarks sit exactly where StyleGAN puts them?

StyleGAN 1 and 2 were trained on FFHQ, whose photos were all aligned the same way, so an uncropped StyleGAN face
has its eyes and mouth at the same fractions of the frame whatever the head pose; photos framed by a person vary
by several per cent. We measured that template with our own MTCNN landmarks on the 3,074 GAN faces of
``shared/data`` (``experiments/measure_eye_template.py``: robust mean and covariance over 90% of them, detection at
192 px;
left/right as the viewer sees them). FFHQ's recipe says about (0.38, 0.48), (0.62, 0.48), 0.25 and (0.50, 0.73):

======================  ===========  ===========
landmark (x, y)         mean         spread (sd)
======================  ===========  ===========
left eye                0.376, 0.472 0.0049, 0.0050
right eye               0.629, 0.472 0.0050, 0.0046
mouth centre            0.502, 0.730 0.0048, 0.0160
interocular distance    0.254        0.0108
======================  ===========  ===========

The score is how typical the face's geometry is of that template: the chance that a StyleGAN face lies at least
this far from it (Mahalanobis distance, chi-square with 6 degrees of freedom). 1 means dead on, 0 far off.

What fools it:

* **Crops, pads, rotations, borders** added by the uploader move the eyes off the template: a cropped GAN face
  scores like a real photo. The other checks must carry those.
* **FFHQ-aligned real photos** sit on the template by construction: FFHQ itself (the real halves of the
  Kaggle 140k and real-or-fake sets in ``shared/data``), and photos passed through face-restoration or
  "AI enhance" tools that use the FFHQ alignment. Those real photos score as high as GAN faces.
* Generators not trained on FFHQ-aligned data (StyleGAN3 at other framings, diffusion models) do not use it.
* Positions are read as fractions of width and height, so a crop that changes the aspect ratio moves the face
  off the template, while a GAN image merely stretched to another aspect ratio still matches.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..align import Face
from ..result import CheckResult

GEOMETRY_NAMES = ("left_eye_x", "left_eye_y", "right_eye_x", "right_eye_y", "mouth_x", "mouth_y")

# Measured by experiments/measure_eye_template.py on shared/data (MTCNN, detect_size 192): see the docstring.
TEMPLATE_MEAN = np.array([0.37575, 0.47207, 0.62932, 0.47209, 0.50241, 0.72964])
TEMPLATE_COVARIANCE = np.array(
    [
        [2.3550e-05, -1.1900e-06, 1.9000e-07, 2.3000e-06, 4.7400e-06, 6.4300e-06],
        [-1.1900e-06, 2.4660e-05, -1.6700e-06, 1.2780e-05, -1.4000e-07, -2.6420e-05],
        [1.9000e-07, -1.6700e-06, 2.5080e-05, 1.3300e-06, 6.0800e-06, -4.3000e-07],
        [2.3000e-06, 1.2780e-05, 1.3300e-06, 2.1600e-05, 6.0000e-07, -1.9920e-05],
        [4.7400e-06, -1.4000e-07, 6.0800e-06, 6.0000e-07, 2.2650e-05, 3.4900e-06],
        [6.4300e-06, -2.6420e-05, -4.3000e-07, -1.9920e-05, 3.4900e-06, 2.5659e-04],
    ]
)
_PRECISION = np.linalg.inv(TEMPLATE_COVARIANCE)


def face_geometry(face: Face, width: int, height: int) -> np.ndarray:
    """Eye centres and mouth centre as fractions of the frame, in :data:`GEOMETRY_NAMES` order."""
    lm = face.landmarks
    mouth = ((lm.mouth_left[0] + lm.mouth_right[0]) / 2, (lm.mouth_left[1] + lm.mouth_right[1]) / 2)
    xy = np.array([lm.left_eye, lm.right_eye, mouth], dtype=np.float64) / [width, height]
    return xy.ravel()


def template_distance(geometry: np.ndarray) -> float:
    """Squared Mahalanobis distance of a face's geometry from the StyleGAN template."""
    delta = geometry - TEMPLATE_MEAN
    return float(delta @ _PRECISION @ delta)


def chi2_6_survival(d2: float) -> float:
    """P(X >= d2) for X ~ chi-square with 6 degrees of freedom (closed form for even degrees)."""
    half = d2 / 2.0
    return float(np.exp(-half) * (1.0 + half + half * half / 2.0))


def template_pixels(width: int, height: int) -> np.ndarray:
    """The template's left eye, right eye and mouth centre in pixels of a ``width x height`` image."""
    return TEMPLATE_MEAN.reshape(3, 2) * [width, height]


def eye_position_check(image: np.ndarray, face: Optional[Face]) -> CheckResult:
    """Score how closely the face's eyes and mouth sit on the StyleGAN/FFHQ template (see the module docstring)."""
    if face is None:
        return CheckResult("eyes", None, "No face found, so eye positions cannot be compared with the template.")
    height, width = image.shape[:2]
    geometry = face_geometry(face, width, height)
    d2 = template_distance(geometry)
    score = chi2_6_survival(d2)
    eye_offset = float(
        np.max(np.hypot(*(geometry[:4] - TEMPLATE_MEAN[:4]).reshape(2, 2).T))
    )  # how far the worse eye is from its template spot, as a fraction of the frame
    if score >= 0.01:
        explanation = (
            f"Eyes within {eye_offset:.1%} of the frame of where StyleGAN places them: typical of an uncropped "
            "GAN face (and of real photos aligned the FFHQ way)."
        )
    elif eye_offset < 0.03:
        explanation = (
            f"Eyes near the StyleGAN spots ({eye_offset:.1%} of the frame off) but the face's proportions or "
            "mouth do not fit the template: inconclusive."
        )
    else:
        explanation = (
            f"Eyes {eye_offset:.1%} of the frame away from the StyleGAN template: framed like an ordinary photo "
            "(or a GAN face that was cropped)."
        )
    half = 0.02 * min(width, height)
    regions = tuple(
        (label, (x - half, y - half, x + half, y + half))
        for label, (x, y) in zip(("template left eye", "template right eye"), template_pixels(width, height)[:2])
    )
    details = {"template_distance2": d2, "eye_offset": eye_offset}
    details.update(zip(GEOMETRY_NAMES, geometry))
    return CheckResult("eyes", score, explanation, regions, details)
