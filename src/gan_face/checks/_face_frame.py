"""Geometry shared by the checks: the face's own frame (roll, scale, yaw) and patches sampled in it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..align import Face


@dataclass(frozen=True)
class FaceFrame:
    """Axes of the face: ``x`` from the viewer's left eye to the right eye, ``y`` towards the mouth.

    ``unit`` is the interocular distance in pixels. ``yaw`` is how far the nose tip sits off the eyes' midline,
    in interocular distances: about 0 for a frontal face, ±0.3 for a head turned about 30 degrees.
    """

    origin: np.ndarray  # midpoint between the eyes, pixels
    x_axis: np.ndarray  # unit vector
    y_axis: np.ndarray  # unit vector, perpendicular, pointing down the face
    unit: float
    yaw: float

    @classmethod
    def of(cls, face: Face) -> "FaceFrame":
        lm = face.landmarks
        left, right = np.array(lm.left_eye), np.array(lm.right_eye)
        origin = (left + right) / 2
        across = right - left
        unit = float(np.hypot(*across)) or 1.0
        x_axis = across / unit
        y_axis = np.array([-x_axis[1], x_axis[0]])
        nose = np.array(lm.nose) - origin
        return cls(origin, x_axis, y_axis, unit, float(nose @ x_axis / unit))

    def to_image(self, u: float, v: float) -> np.ndarray:
        """Pixel position of face coordinates ``(u, v)`` (in interocular units from the eyes' midpoint)."""
        return self.origin + self.unit * (u * self.x_axis + v * self.y_axis)

    def box(self, u: float, v: float, half: float) -> tuple[float, float, float, float]:
        """An axis-aligned box around face point ``(u, v)``, ``half`` interocular units each way (for reports)."""
        x, y = self.to_image(u, v)
        r = half * self.unit
        return (float(x - r), float(y - r), float(x + r), float(y + r))


def sample_patch(image: Image.Image, frame: FaceFrame, u: float, v: float, half: float, size: int) -> np.ndarray:
    """A ``size x size`` patch centred on face point ``(u, v)``, ``2 * half`` interocular units wide, upright.

    Sampled straight from the image at its own resolution (bilinear), so a small face gives a soft patch and
    nothing is resized twice. Outside the image the patch is mid grey.
    """
    centre = frame.to_image(u, v)
    step = 2.0 * half * frame.unit / size  # image pixels per patch pixel
    # PIL's affine maps output pixel (i, j) to input (a*i + b*j + c, d*i + e*j + f)
    a, d = frame.x_axis * step
    b, e = frame.y_axis * step
    c, f = centre - (size / 2) * step * (frame.x_axis + frame.y_axis)
    return np.asarray(
        image.transform((size, size), Image.AFFINE, (a, b, c, d, e, f), Image.BILINEAR, fillcolor=(128, 128, 128))
    )


def to_grey(patch: np.ndarray) -> np.ndarray:
    return patch.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 1e-9 else 1.0


def gradient_magnitude(grey: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(grey)
    return np.hypot(gx, gy)


def box_blur(values: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a ``(2r+1)`` square window (borders reflected), by cumulative sums: cost independent of ``r``."""
    padded = np.pad(values, radius + 1, mode="reflect")
    summed = padded.cumsum(axis=0).cumsum(axis=1)
    w = 2 * radius + 1
    window = summed[w:, w:] - summed[:-w, w:] - summed[w:, :-w] + summed[:-w, :-w]
    return window[: values.shape[0], : values.shape[1]] / (w * w)
