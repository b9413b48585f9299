"""What a CNN looks at: the aligned face crop or the whole frame at low resolution.

Training (the crop pools) and scoring both cut their network's input here, so the two cannot drift. A card's
:class:`~gan_face.card.CnnConfig` names the view (``"face"`` or ``"frame"``).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .align import Landmarks, align_face

VIEWS = ("face", "frame")


def centre_square(width: int, height: int) -> tuple[int, int, int, int]:
    """The largest centred square of a ``width x height`` image as (left, top, side, side): an avatar's crop."""
    side = min(height, width)
    return (width - side) // 2, (height - side) // 2, side, side


def frame_view(image: np.ndarray, size: int) -> np.ndarray:
    """The whole frame at low resolution: the centred square (as an avatar crop takes it), resized to ``size``.

    It keeps what the aligned face loses (background, hair, clothes, the framing of the shot), where generators
    leave traces of their own.
    """
    left, top, side, _ = centre_square(image.shape[1], image.shape[0])
    square = Image.fromarray(image[top : top + side, left : left + side])
    resampling = Image.Resampling.BOX if side > size else Image.Resampling.BICUBIC  # area-average when shrinking
    return np.asarray(square.resize((size, size), resampling))


def cut_view(image: np.ndarray, landmarks: Landmarks, view: str, size: int, template: np.ndarray) -> np.ndarray:
    """The ``size`` x ``size`` input of a CNN on ``view``: the face aligned to ``template``, or the frame."""
    if view == "frame":
        return frame_view(image, size)
    if view == "face":
        return align_face(image, landmarks, size, template)
    raise ValueError(f"unknown view {view!r} (expected one of {VIEWS})")
