"""Spectral check: traces of a generator's upsampling layers in the Fourier domain of the face.

GANs build images by repeated 2x upsampling. Transposed convolutions and nearest/bilinear upsampling leave
periodic patterns with a period of 2 or 4 pixels (peaks at a half and a quarter of the sampling frequency) and
distort how power falls off at high frequencies (Durall et al. 2020; Frank et al. 2020).

What it reads, on a square around the face **at the image's own resolution** (no resize, which would smear
exactly these traces), grey, windowed:

* **Periodic peaks**: how far the power at frequencies ``k/4`` and ``1/2`` cycles per pixel stands above its
  ring, minus what an 8x8 JPEG block grid explains. A JPEG grid puts peaks at every multiple of 1/8, odd
  multiples (1/8, 3/8) included; upsampling does not, so the odd multiples measure the grid's share.
* **Fall-off**: the slope and curvature of the azimuthally averaged log power over the upper half of the
  frequencies, and the share of power there.

The features are combined by weights fitted on the training sources (``scripts/fit_checks.py``).

What fools it: resizing (downscaling a GAN image folds these traces away; upscaling a small photo empties the
high frequencies), strong JPEG, denoising or sharpening filters, and StyleGAN3, which is alias-free by design.
On avatars that went through a social network it is the weakest of the checks.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .._math import sigmoid
from ..align import Face
from ..result import CheckResult
from ._face_frame import FaceFrame, to_grey
from ._weights import check_weights

FEATURES = ("periodic_peaks", "slope", "curvature", "high_share")
#: Direction each measurement may push the score when fitted: periodic peaks and excess high-frequency power
#: point to a GAN; the shape of the fall-off is left to the data.
SIGNS = ("+", "", "", "+")
#: Periodic peaks this far above their ring (log power: e^2.5, about 12 times) are taken as upsampling traces
#: whatever the fitted weights say: the fakes in shared/data were all resized, which erased such peaks, so the
#: data cannot teach this rule; a checkerboard from a transposed convolution gives 4 to 6, a JPEG grid under 1.5.
PEAK_THRESHOLD = 2.5
PEAK_WEIGHT = 2.0
MIN_SIDE = 48
MAX_SIDE = 512  # larger faces: the central part at native resolution is enough (and faster)


def face_square(image: np.ndarray, face: Face) -> Optional[np.ndarray]:
    """The grey square around the face (brows to chin, cheek to cheek) at native resolution, or ``None``."""
    frame = FaceFrame.of(face)
    cx, cy = frame.to_image(0.0, 0.5)
    half = int(min(1.1 * frame.unit, MAX_SIDE / 2))
    height, width = image.shape[:2]
    x0, y0 = max(0, int(round(cx)) - half), max(0, int(round(cy)) - half)
    x1, y1 = min(width, x0 + 2 * half), min(height, y0 + 2 * half)
    side = min(x1 - x0, y1 - y0)
    if side < MIN_SIDE:
        return None
    return to_grey(image[y0 : y0 + side, x0 : x0 + side])


def power_spectrum(grey: np.ndarray) -> np.ndarray:
    """2-D power spectrum (FFT order, not shifted) of a mean-removed, Hann-windowed square."""
    side = grey.shape[0]
    window = np.outer(np.hanning(side), np.hanning(side))
    return np.abs(np.fft.fft2((grey - grey.mean()) * window)) ** 2 + 1e-9


def spectrum_features(grey: np.ndarray) -> dict[str, float]:
    side = grey.shape[0]
    power = power_spectrum(grey)
    log_power = np.log(power)
    freq = np.fft.fftfreq(side)
    radius = np.hypot(*np.meshgrid(freq, freq, indexing="ij"))

    ring_medians: dict[float, float] = {}  # several peaks share a ring: its median is computed once

    def ring_median(r: float) -> float:
        if r not in ring_medians:
            width = 1.5 / side
            ring = np.abs(radius - r) < width
            while ring.sum() < 24 and width < 0.1:  # the corners have few bins on a ring
                width *= 2
                ring = np.abs(radius - r) < width
            ring_medians[r] = float(np.median(log_power[ring]))
        return ring_medians[r]

    def prominence(fx: float, fy: float) -> float:
        """How far the log power at frequency (fx, fy) stands above the median of its frequency ring."""
        kx, ky = int(round(fx * side)) % side, int(round(fy * side)) % side
        rows, cols = (np.arange(ky - 1, ky + 2) % side), (np.arange(kx - 1, kx + 2) % side)
        return float(log_power[np.ix_(rows, cols)].max() - ring_median(float(np.hypot(fx, fy))))

    # a 2- or 4-pixel period (upsampling) against the odd multiples of 1/8 that only a JPEG block grid makes
    upsampling = max(
        prominence(fx, fy)
        for fx, fy in (
            (0.25, 0),
            (0, 0.25),
            (0.5, 0),
            (0, 0.5),
            (0.25, 0.25),
            (0.5, 0.5),
            (0.5, 0.25),
            (0.25, 0.5),
        )
    )
    jpeg_grid = max(prominence(fx, fy) for fx, fy in ((0.125, 0), (0, 0.125), (0.375, 0), (0, 0.375)))

    # azimuthal average of the log power over the upper half of the frequencies
    bins = np.linspace(0.25, 0.5, 11)
    profile = [log_power[(radius >= lo) & (radius < hi)].mean() for lo, hi in zip(bins[:-1], bins[1:])]
    curvature, slope, _ = np.polyfit((bins[:-1] + bins[1:]) / 2, np.array(profile), 2)
    high = power[radius >= 0.25].sum() / power[radius > 0.02].sum()
    return {
        "periodic_peaks": max(upsampling - max(jpeg_grid, 0.0), 0.0),
        "slope": float(slope),
        "curvature": float(curvature),
        "high_share": float(np.log(high)),
    }


def spectrum_check(image: np.ndarray, face: Optional[Face]) -> CheckResult:
    """Score upsampling traces in the face's spectrum (see the module docstring)."""
    if face is None:
        height, width = image.shape[:2]
        side = min(height, width, MAX_SIDE)
        top, left = (height - side) // 2, (width - side) // 2
        grey = to_grey(image[top : top + side, left : left + side]) if side >= MIN_SIDE else None
        where = "the centre of the frame"
    else:
        grey = face_square(image, face)
        where = "the face"
    if grey is None:
        return CheckResult(
            "spectrum", None, f"The image is too small at this resolution for a spectral reading of {where}."
        )
    features = spectrum_features(grey)
    evidence = check_weights("spectrum")
    peak_term = PEAK_WEIGHT * max(0.0, features["periodic_peaks"] - PEAK_THRESHOLD)
    score = sigmoid(evidence.intercept + float(evidence.terms(features).sum()) + peak_term)
    if features["periodic_peaks"] > PEAK_THRESHOLD:
        explanation = (
            f"Periodic peaks in the spectrum of {where}: traces of upsampling layers (or a resampling grid)."
        )
    elif score >= 0.65:
        explanation = f"The fine detail of {where} falls off the way generated images do (or it was resized)."
    elif score >= 0.5:
        explanation = f"The fine detail of {where} is ambiguous, slightly like generated images (weak evidence)."
    else:
        explanation = f"The spectrum of {where} looks like a camera photo's."
    regions = () if face is None else (("spectrum window", FaceFrame.of(face).box(0.0, 0.5, 1.1)),)
    return CheckResult("spectrum", score, explanation, regions, features)
