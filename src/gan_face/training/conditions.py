"""The image conditions of the evaluation protocol (DESIGN.md): what an image goes through before it is scored.

Conditions (each reported separately):

* ``clean``: the file as it is.
* ``avatar``: square centre crop, 400x400, JPEG quality 85: what a social network does to a profile photo.
* ``laundered``: resized to one of 256/300/384/512/640/768/1024 px and re-encoded at JPEG quality one of
  30/50/70/80/90/95 (the StyleGAN3 detection challenge protocol), chosen per image from a seeded generator.
* ``cropped``: a random crop keeping 70-95% of each side, resized back: defeats the eye template.
* ``gray``: the avatar condition turned to grayscale (black-and-white avatars are common), saved as a
  grayscale JPEG at quality 85.

Every random choice comes from a generator seeded with the image's index, so a condition is the same image in
every run and for every model.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image

from ..views import centre_square

CONDITIONS = ("clean", "avatar", "laundered", "cropped", "gray")
#: The five landmarks where the FFHQ alignment puts them (fractions of the side): the crop template scaled and
#: moved so the eyes land on the StyleGAN template measured by the eye check (``checks.eyes.TEMPLATE_MEAN``:
#: eyes at 0.376 and 0.629 of the width, 0.472 of the height; the mouth then lands at 0.730, as measured).
FFHQ_TEMPLATE = (np.array([[0.3425, 0.405], [0.6575, 0.405], [0.5, 0.575], [0.37, 0.725], [0.63, 0.725]])
                 - [0.5, 0.405]) * (0.2536 / 0.315) + [0.5025, 0.4721]  # fmt: skip
LAUNDER_SIZES = (256, 300, 384, 512, 640, 768, 1024)
LAUNDER_QUALITIES = (30, 50, 70, 80, 90, 95)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def to_gray(image: np.ndarray) -> np.ndarray:
    """``image`` in grayscale (luma), three equal channels, as the loader returns a black-and-white file."""
    grey = np.asarray(Image.fromarray(image).convert("L"))
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((int(width), int(height)), Image.LANCZOS))


@dataclass(frozen=True)
class ConditionPlan:
    """What a condition does to one image: crop ``box`` (left, top, width, height), resize to ``size`` (width,
    height), an optional JPEG round trip, and for ``gray`` a grayscale copy of that saved as JPEG again. The
    geometry alone (:attr:`matrix`, ``size``) moves landmarks without touching pixels."""

    box: tuple[int, int, int, int]
    size: tuple[int, int]
    jpeg_quality: Optional[int] = None
    gray: bool = False

    @property
    def matrix(self) -> np.ndarray:
        """The ``2 x 3`` matrix taking original pixel coordinates to the conditioned image's."""
        left, top, crop_w, crop_h = self.box
        sx, sy = self.size[0] / crop_w, self.size[1] / crop_h
        return np.array([[sx, 0.0, -left * sx], [0.0, sy, -top * sy]])


def ffhq_realign(image: np.ndarray, points: np.ndarray, size: int = 400, quality: int = 85) -> np.ndarray:
    """``image`` re-cropped the FFHQ way from its landmarks (eyes and mouth on the StyleGAN template, as
    face-restoration tools align any photo), at ``size`` px, saved as JPEG: a real photo framed like a
    StyleGAN face, the hard negative that teaches a view of the frame that framing is not evidence."""
    from ..align import Landmarks, align_face

    return jpeg_roundtrip(align_face(image, Landmarks.from_array(points), size, FFHQ_TEMPLATE), quality)


def face_square(image: np.ndarray, points: np.ndarray, widths: float, shift=(0.0, 0.0), quality: int = 95):
    """A square around the face, ``widths`` interocular distances wide (less where the photo ends), its centre
    the landmarks' centre moved by ``shift`` (in interocular distances), saved as JPEG: a scene or a loose photo
    cut to a headshot (the new occupation sources were cut so: about 7 interocular distances, JPEG 95). Returns
    the crop and the ``2 x 3`` matrix taking original pixel coordinates to the crop's."""
    height, width = image.shape[:2]
    interocular = max(float(np.linalg.norm(points[1] - points[0])), 1.0)
    side = int(min(round(widths * interocular), width, height))
    centre = points.mean(axis=0) + np.asarray(shift) * interocular
    left = int(np.clip(round(centre[0] - side / 2), 0, width - side))
    top = int(np.clip(round(centre[1] - side / 2), 0, height - side))
    crop = jpeg_roundtrip(np.ascontiguousarray(image[top : top + side, left : left + side]), quality)
    return crop, np.array([[1.0, 0.0, -left], [0.0, 1.0, -top]])


def plan_condition(width: int, height: int, condition: str, seed: int) -> ConditionPlan:
    """The plan of ``condition`` for an image of ``width x height``, with the random choices seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    full = (0, 0, width, height)
    if condition == "clean":
        return ConditionPlan(full, (width, height))
    if condition in ("avatar", "gray"):
        return ConditionPlan(centre_square(width, height), (400, 400), 85, gray=condition == "gray")
    if condition == "laundered":
        target = int(rng.choice(LAUNDER_SIZES))
        scale = target / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return ConditionPlan(full, size, int(rng.choice(LAUNDER_QUALITIES)))
    if condition == "cropped":
        keep_w, keep_h = rng.uniform(0.70, 0.95, size=2)
        crop_w, crop_h = max(1, round(width * keep_w)), max(1, round(height * keep_h))
        left = int(rng.integers(0, width - crop_w + 1))
        top = int(rng.integers(0, height - crop_h + 1))
        return ConditionPlan((left, top, crop_w, crop_h), (width, height))
    raise ValueError(f"unknown condition {condition!r}; expected one of {CONDITIONS}")


def apply_condition(image: np.ndarray, condition: str, seed: int) -> np.ndarray:
    """``image`` as it would look under ``condition`` (see the module docstring)."""
    return condition_with_transform(image, condition, seed)[0]


def condition_with_transform(image: np.ndarray, condition: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The conditioned image and the ``2 x 3`` matrix taking original pixel coordinates to the new image's."""
    height, width = image.shape[:2]
    plan = plan_condition(width, height, condition, seed)
    left, top, crop_w, crop_h = plan.box
    out = image[top : top + crop_h, left : left + crop_w]
    if plan.size != (crop_w, crop_h):
        out = resize(out, *plan.size)
    if plan.jpeg_quality is not None:
        out = jpeg_roundtrip(out, plan.jpeg_quality)
    if plan.gray:  # the colour avatar, then saved again in grayscale
        out = jpeg_roundtrip(to_gray(out), plan.jpeg_quality or 85)
    return out, plan.matrix
