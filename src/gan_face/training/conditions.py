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

import numpy as np
from PIL import Image

CONDITIONS = ("clean", "avatar", "laundered", "cropped", "gray")
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


def apply_condition(image: np.ndarray, condition: str, seed: int) -> np.ndarray:
    """``image`` as it would look under ``condition`` (see the module docstring)."""
    return condition_with_transform(image, condition, seed)[0]


def condition_with_transform(image: np.ndarray, condition: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The conditioned image and the ``2 x 3`` matrix taking original pixel coordinates to the new image's."""
    rng = np.random.default_rng(seed)
    height, width = image.shape[:2]
    if condition == "clean":
        return image, np.array([[1.0, 0, 0], [0, 1.0, 0]])
    if condition == "gray":
        avatar, matrix = condition_with_transform(image, "avatar", seed)
        return jpeg_roundtrip(to_gray(avatar), 85), matrix
    if condition == "avatar":
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = image[top : top + side, left : left + side]
        scale = 400 / side
        return jpeg_roundtrip(resize(square, 400, 400), 85), np.array(
            [[scale, 0, -left * scale], [0, scale, -top * scale]]
        )
    if condition == "laundered":
        target = int(rng.choice(LAUNDER_SIZES))
        scale = target / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        resized = resize(image, new_w, new_h)
        matrix = np.array([[new_w / width, 0, 0], [0, new_h / height, 0]])
        return jpeg_roundtrip(resized, int(rng.choice(LAUNDER_QUALITIES))), matrix
    if condition == "cropped":
        keep_w, keep_h = rng.uniform(0.70, 0.95, size=2)
        crop_w, crop_h = max(1, round(width * keep_w)), max(1, round(height * keep_h))
        left = int(rng.integers(0, width - crop_w + 1))
        top = int(rng.integers(0, height - crop_h + 1))
        sx, sy = width / crop_w, height / crop_h
        matrix = np.array([[sx, 0, -left * sx], [0, sy, -top * sy]])
        return resize(image[top : top + crop_h, left : left + crop_w], width, height), matrix
    raise ValueError(f"unknown condition {condition!r}; expected one of {CONDITIONS}")
