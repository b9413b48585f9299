"""Partly generated pictures with a known truth per pixel: what the evidence map learns from and is measured on.

A composite is a host picture (a real photo or a generated one) with a region of a donor of the other class
blended in: a square of 40-55% of the side at a random place, the donor's face box, or the background (all but
the host's face and hair, an ellipse around its face box). Both pictures first go through the random "social
network" history of :mod:`.augment` (resize, blur, JPEG at a random quality), each its own, so codec and size
history say nothing about which pixels are generated; the mask's edge is feathered (Gaussian-blurred) so a hard
seam is not what a model learns; then the whole picture goes through the avatar condition (400x400, JPEG q85).
Whole pictures (all real, all generated) are the image-level examples.

The truth is ``fraction``: per pixel of the final picture, how much of it came from the generated picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageFilter

from ..io import load_image
from ..views import centre_square
from .augment import Augmentation, degrade
from .conditions import apply_condition
from .datasets import Sample

REGIONS = ("square", "face", "background")
#: Each picture's own history: the augmentation's resize, blur and JPEG ranges; no crops (the frame is cut
#: below), no grayscale (one grey half would be a give-away), nothing so small that upscaling erases all detail.
HISTORY = Augmentation(p_crop=0.0, p_tight_fake=0.0, p_tight_real=0.0, p_gray=0.0, size_range=(256, 1024))


@dataclass(frozen=True)
class Composite:
    """One picture and its truth. ``region`` is ``"whole"`` for an image-level example (then ``donor`` is
    ``None``); ``host`` and ``donor`` are the samples' paths."""

    image: np.ndarray  # 400 x 400 x 3 uint8, after the avatar condition
    fraction: np.ndarray  # 400 x 400 float32 in [0, 1]: how generated each pixel is
    host: Sample
    donor: Optional[Sample]
    region: str


def square_frame(image: np.ndarray, side: int) -> np.ndarray:
    """The centred square of ``image`` resized to ``side`` px (how an avatar is cut)."""
    left, top, size, _ = centre_square(image.shape[1], image.shape[0])
    crop = Image.fromarray(image[top : top + size, left : left + size])
    return np.asarray(crop.resize((side, side), Image.BICUBIC))


def square_mask(side: int, rng: np.random.Generator, share: tuple[float, float] = (0.40, 0.55)) -> np.ndarray:
    """A square of ``share`` of the frame's side at a random position (1 inside)."""
    size = round(side * rng.uniform(*share))
    left, top = (int(v) for v in rng.integers(0, side - size + 1, size=2))
    mask = np.zeros((side, side), np.float32)
    mask[top : top + size, left : left + size] = 1.0
    return mask


def box_mask(side: int, box: Sequence[float]) -> np.ndarray:
    """1 inside the box ``(x0, y0, x1, y1)`` (clipped to the frame)."""
    x0, y0, x1, y1 = (int(round(min(max(v, 0), side))) for v in box)
    mask = np.zeros((side, side), np.float32)
    mask[y0:y1, x0:x1] = 1.0
    return mask


def head_ellipse(side: int, box: Sequence[float]) -> np.ndarray:
    """1 inside an ellipse around a face box wide and tall enough to hold the hair: the person's head."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - 0.15 * (y1 - y0)
    ax, ay = 0.85 * (x1 - x0), 0.95 * (y1 - y0)
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    return ((((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2) <= 1.0).astype(np.float32)


def feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    """The mask with a soft edge: blurred by a Gaussian of ``sigma`` px, values in [0, 1]."""
    pil = Image.fromarray(np.round(mask * 255).astype(np.uint8))
    return np.asarray(pil.filter(ImageFilter.GaussianBlur(sigma)), np.float32) / 255.0


def blend(host: np.ndarray, donor: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``donor`` where ``mask`` is 1, ``host`` where it is 0, mixed in between."""
    alpha = mask[:, :, None]
    return np.clip(np.round(host * (1.0 - alpha) + donor * alpha), 0, 255).astype(np.uint8)


def region_mask(region: str, side: int, rng: np.random.Generator, host_box=None, donor_box=None) -> np.ndarray:
    """The hard mask of ``region`` (the donor's pixels) in a ``side`` px frame; a square when no face is known."""
    if region == "face" and donor_box is not None:
        return box_mask(side, donor_box)
    if region == "background" and host_box is not None:
        return 1.0 - head_ellipse(side, host_box)
    return square_mask(side, rng)


def with_history(image: np.ndarray, rng: np.random.Generator, label: int) -> np.ndarray:
    """``image`` after its own random resize, blur and JPEG history (:data:`HISTORY`)."""
    height, width = image.shape[:2]
    centre = np.array([[width / 2, height / 2]] * 5) + [[-1, 0], [1, 0], [0, 0], [-1, 1], [1, 1]]
    return degrade(image, centre, rng, HISTORY, label)[0]


def make_composite(
    host: Sample,
    donor: Optional[Sample],
    region: str,
    seed: int,
    aligner=None,
    host_image: Optional[np.ndarray] = None,
    donor_image: Optional[np.ndarray] = None,
) -> Composite:
    """A composite of ``donor``'s ``region`` in ``host`` (see the module docstring); ``donor=None``: the host
    alone (a whole-picture example). ``aligner`` (a :class:`gan_face.align.FaceAligner`) finds the face boxes for
    the ``face`` and ``background`` regions; without one those regions fall back to a square. Images may be
    passed in (tests); otherwise they are read from the samples' paths."""
    rng = np.random.default_rng(seed)
    side = int(rng.integers(400, 641))
    host_pixels = host_image if host_image is not None else load_image(host.path)
    frame = square_frame(with_history(host_pixels, rng, host.label), side)
    if donor is None:
        fraction = np.full((side, side), float(host.label), np.float32)
        return _conditioned(frame, fraction, host, None, "whole", seed)
    if donor.label == host.label:
        raise ValueError("a composite's donor must be of the other class than its host")
    donor_pixels = donor_image if donor_image is not None else load_image(donor.path)
    donor_frame = square_frame(with_history(donor_pixels, rng, donor.label), side)
    host_box = donor_box = None
    if aligner is not None and region == "background":
        host_box = _main_box(aligner, frame)
    if aligner is not None and region == "face":
        donor_box = _main_box(aligner, donor_frame)
    mask = region_mask(region, side, rng, host_box, donor_box)
    found = (host_box if region == "background" else donor_box) is not None
    if region != "square" and (not found or not 0.08 <= mask.mean() <= 0.75):
        region, mask = "square", square_mask(side, rng)  # no face, or one filling the frame: a square instead
    mask = feather(mask, sigma=float(rng.uniform(2.0, 8.0)) * side / 400)
    picture = blend(frame, donor_frame, mask)
    fraction = mask if donor.label == 1 else 1.0 - mask
    return _conditioned(picture, fraction, host, donor, region, seed)


def _main_box(aligner, image: np.ndarray):
    faces = aligner.detect(image)
    return faces[0].box if faces else None


def _conditioned(picture, fraction, host, donor, region, seed) -> Composite:
    image = apply_condition(picture, "avatar", seed=seed)
    size = image.shape[1], image.shape[0]
    fraction = np.asarray(Image.fromarray(fraction.astype(np.float32), mode="F").resize(size, Image.BILINEAR))
    return Composite(image, np.clip(fraction, 0.0, 1.0).astype(np.float32), host, donor, region)


def cell_fractions(fraction: np.ndarray, cells: int) -> np.ndarray:
    """The mean of ``fraction`` over each of ``cells x cells`` equal cells (rows top to bottom)."""
    side = fraction.shape[0] - fraction.shape[0] % cells
    crop = fraction[:side, :side]
    return crop.reshape(cells, side // cells, cells, side // cells).mean(axis=(1, 3))


@dataclass(frozen=True)
class Plan:
    """What one composite is made of: its seed, host, donor (``None``: whole picture) and region."""

    seed: int
    host: Sample
    donor: Optional[Sample]
    region: str


def plan_composites(samples: Sequence[Sample], count: int, seed: int, whole_share: float = 0.2) -> list[Plan]:
    """``count`` plans over ``samples``: half generated-in-real, half real-in-generated, ``whole_share`` of them
    whole pictures; hosts and donors drawn source first (every source equally likely), then a picture of it."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, dict[str, list[Sample]]] = {0: {}, 1: {}}
    for sample in samples:
        by_class[sample.label].setdefault(sample.source, []).append(sample)

    def draw(label: int) -> Sample:
        sources = sorted(by_class[label])
        pool = by_class[label][sources[int(rng.integers(len(sources)))]]
        return pool[int(rng.integers(len(pool)))]

    plans = []
    for i in range(count):
        host_label = i % 2  # 0: a generated region in a real photo; 1: a real region in a generated picture
        host = draw(host_label)
        if rng.random() < whole_share:
            plans.append(Plan(seed * 1_000_003 + i, host, None, "whole"))
        else:
            region = REGIONS[int(rng.integers(len(REGIONS)))]
            plans.append(Plan(seed * 1_000_003 + i, host, draw(1 - host_label), region))
    return plans
