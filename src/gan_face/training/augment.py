"""The random "social network" history every training image goes through, and the crops it is cut into.

How the shortcuts in the data are removed:

* The CNN sees our own aligned crop, so framing (the eye check's evidence) cannot leak into it.
* Every training image, real or fake, goes through a random history before it is cropped: an optional crop of
  the frame, a resize to a random size (112 to 1024 px, random filter), optional blur, and JPEG re-encoding at
  quality 30-100 (sometimes twice). Codec and size then say nothing about the label.
* Landmarks are moved with the image and jittered as much as MTCNN's own noise, so the crop is never exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from .conditions import jpeg_roundtrip, to_gray

RESAMPLING = (Image.BILINEAR, Image.BICUBIC, Image.LANCZOS, Image.BOX)


@dataclass(frozen=True)
class Augmentation:
    """The random history every training image goes through (probabilities and ranges)."""

    p_crop: float = 0.4
    crop_keep: tuple[float, float] = (0.65, 1.0)
    # A tight square around the face, as in face-crop data sets (face filling the frame): the aligned crop then
    # reaches past the photo and mirrors its border. Done to both classes so that mirrored borders say nothing.
    # Face-crop data sets make many real photos tight already, so fakes get tight crops more often than reals.
    p_tight_fake: float = 0.4
    p_tight_real: float = 0.15
    tight_side: tuple[float, float] = (2.0, 3.5)  # in interocular distances
    size_range: tuple[int, int] = (112, 1024)  # longer side after resizing, log-uniform
    p_blur: float = 0.15
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    p_jpeg: float = 0.85
    jpeg_quality: tuple[int, int] = (30, 100)
    p_second_jpeg: float = 0.2
    # Black-and-white avatars are common and any uploader can make one: both classes, equally (gan-face-v1
    # trained without it, and lost most of its TPR on grayscale GAN faces).
    p_gray: float = 0.15
    landmark_jitter: float = 0.03  # per point, as a fraction of the interocular distance (MTCNN's own noise)


def degrade(image: np.ndarray, points: np.ndarray, rng: np.random.Generator, aug: Augmentation, label: int):
    """Random crop, resize, blur and JPEG history; returns the new image and the landmarks moved with it."""
    height, width = image.shape[:2]
    points = points.copy()
    draw = rng.random()
    box = None
    if draw < aug.p_crop:
        box = _random_crop_keeping_face(width, height, points, rng, aug.crop_keep)
    elif draw < aug.p_crop + (aug.p_tight_fake if label == 1 else aug.p_tight_real):
        box = _tight_crop(width, height, points, rng, aug.tight_side)
    if box is not None:
        left, top, right, bottom = box
        image = image[top:bottom, left:right]
        points -= [left, top]
        height, width = bottom - top, right - left
    target = math.exp(rng.uniform(math.log(aug.size_range[0]), math.log(aug.size_range[1])))
    scale = target / max(height, width)
    new_w, new_h = max(8, round(width * scale)), max(8, round(height * scale))
    pil = Image.fromarray(image).resize((new_w, new_h), RESAMPLING[int(rng.integers(len(RESAMPLING)))])
    points *= [new_w / width, new_h / height]
    if rng.random() < aug.p_blur:
        pil = pil.filter(ImageFilter.GaussianBlur(float(rng.uniform(*aug.blur_sigma)) * max(1.0, scale)))
    image = np.asarray(pil)
    if rng.random() < aug.p_gray:
        image = to_gray(image)
    if rng.random() < aug.p_jpeg:
        image = jpeg_roundtrip(image, int(rng.integers(aug.jpeg_quality[0], aug.jpeg_quality[1] + 1)))
        if rng.random() < aug.p_second_jpeg:
            image = jpeg_roundtrip(image, int(rng.integers(aug.jpeg_quality[0], aug.jpeg_quality[1] + 1)))
    interocular = float(np.hypot(*(points[1] - points[0])))
    points += rng.normal(0.0, aug.landmark_jitter * interocular, size=points.shape)
    return image, points


def _random_crop_keeping_face(width, height, points, rng, keep_range):
    for _ in range(5):  # a crop that keeps the eyes and mouth in view
        keep_w, keep_h = rng.uniform(*keep_range, size=2)
        cw, ch = max(8, round(width * keep_w)), max(8, round(height * keep_h))
        left, top = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
        xs, ys = points[:, 0], points[:, 1]
        if (xs > left).all() and (xs < left + cw).all() and (ys > top).all() and (ys < top + ch).all():
            return left, top, left + cw, top + ch
    return None


def _tight_crop(width, height, points, rng, side_range):
    interocular = float(np.hypot(*(points[1] - points[0])))
    side = interocular * rng.uniform(*side_range)
    cx, cy = points.mean(axis=0) + rng.normal(0.0, 0.15 * interocular, size=2)
    left, top = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
    right, bottom = min(width, round(cx + side / 2)), min(height, round(cy + side / 2))
    if right - left < 16 or bottom - top < 16:
        return None
    return left, top, right, bottom
