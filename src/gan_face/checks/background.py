"""Background check: is the frame outside the face and hair blank, or full of structures that do not continue?

StyleGAN's backgrounds are its weakest part: it renders them as soft, smeared colour fields, and where it
attempts objects they melt: edges that start and stop, textures without direction. Real photos have either a
real scene (straight, continuous edges: walls, windows, furniture, text) or a plain backdrop.

What it reads, outside an ellipse around face and hair and a band below for neck and shoulders, on a copy
scaled to the face's size (so a big photo and a small one are compared at the same scale):

* **Blankness**: texture energy (mean gradient) and edge density.
* **Incoherence**: orientation coherence of the structure tensor at two scales. Straight, continuing lines
  stay coherent over a large window; smeared GAN structures lose it.
* **Straight lines**: the total length of long straight edges (at least half the distance between the
  eyes), found by a Hough transform on the background's edges. Rooms, windows, shelves and buildings give
  real photos long straight lines; StyleGAN cannot draw them, so its backgrounds have few or none.
* **Blob statistics**: the share of background in isolated blobs of texture, surrounded by smooth areas.
* **Background against face**: the background's detail relative to the face's, at the same resolution: a
  smeared background behind a sharp face, whatever the size or compression of the photo.

The features are combined by weights fitted on the training sources (``scripts/fit_checks.py``).

What fools it: studio portraits and outdoor shots of foliage or sky have no straight lines either; cut-out
avatars with plain backdrops look blank; shallow depth of field (bokeh) looks smeared; a face filling the
frame leaves nothing to judge (the check then declines). It is evidence, never a verdict on its own.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from PIL import Image, ImageFilter
from skimage.feature import canny
from skimage.transform import probabilistic_hough_line

from ..align import Face
from ..result import CheckResult
from ._face_frame import FaceFrame, box_blur, to_grey
from ._weights import check_weights

FEATURES = (
    "texture",
    "edge_density",
    "coherence_small",
    "coherence_large",
    "blobs",
    "relative_texture",
    "straight_lines",
)
#: Direction each measurement may push the score when fitted: blank (less texture, fewer edges), incoherent
#: (less orientation coherence), blobby, smeared relative to the face, and without straight lines all point to a
#: GAN.
SIGNS = ("-", "-", "-", "-", "+", "-", "-")
WORK_UNIT = 20.0  # the working copy is scaled so the interocular distance is this many pixels
MIN_BACKGROUND_SHARE = 0.15  # less background than this (a tight crop) is too little to judge
STRAIGHT_SCENE = 2.5  # straight-line length at which a person will see walls, frames or furniture
MIN_LINE = 0.5  # shortest straight edge counted, in interocular distances


def face_coordinates(shape: tuple[int, int], frame: FaceFrame) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel's position in the face's frame (``u`` across, ``v`` down, in interocular distances)."""
    height, width = shape
    yy, xx = np.mgrid[:height, :width].astype(np.float64)
    rel = np.stack([xx - frame.origin[0], yy - frame.origin[1]], axis=-1) / frame.unit
    return rel @ frame.x_axis, rel @ frame.y_axis


def background_mask(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """True where the pixel is background: outside the face-and-hair ellipse and the neck-and-shoulders band."""
    head = ((u / 1.5) ** 2 + ((v + 0.05) / 1.95) ** 2) <= 1.0  # face, ears and hair
    body = (v > 1.5) & (np.abs(u) < 1.0 + 0.8 * (v - 1.5))  # neck and shoulders, widening below the chin
    return ~(head | body)


def face_mask(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """True on the inner face (cheeks, eyes, nose, mouth), where a photo is in focus."""
    return ((u / 0.9) ** 2 + ((v - 0.55) / 1.0) ** 2) <= 1.0


def background_features(image: np.ndarray, face: Face) -> Optional[dict[str, float]]:
    """Raw measurements of the background, or ``None`` when the face leaves too little of it."""
    frame = FaceFrame.of(face)
    scale = min(1.0, WORK_UNIT / frame.unit) if frame.unit > 0 else 1.0
    height, width = image.shape[:2]
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    small = Image.fromarray(image).resize(size, Image.BILINEAR, reducing_gap=2.0)
    sharp_grey = to_grey(np.asarray(small))
    grey = to_grey(np.asarray(small.filter(ImageFilter.GaussianBlur(0.7))))
    work_frame = FaceFrame(
        frame.origin * [size[0] / width, size[1] / height],
        frame.x_axis,
        frame.y_axis,
        frame.unit * scale,
        frame.yaw,
    )
    u, v = face_coordinates(grey.shape, work_frame)
    mask = background_mask(u, v)
    inner_face = face_mask(u, v)
    if mask.mean() < MIN_BACKGROUND_SHARE or not inner_face.any():
        return None
    gy, gx = np.gradient(grey)
    magnitude = np.hypot(gx, gy)
    return {
        "texture": float(magnitude[mask].mean()),
        "edge_density": float((magnitude[mask] > 8.0).mean()),
        "coherence_small": _coherence(gx, gy, mask, 2),
        "coherence_large": _coherence(gx, gy, mask, 6),
        "blobs": _blob_share(magnitude, mask),
        # background detail against the face's own, at the same resolution and compression: a GAN's smeared
        # background beside a sharp face; independent of how large or sharp the whole photo is
        "relative_texture": float(np.log((magnitude[mask].mean() + 0.5) / (magnitude[inner_face].mean() + 0.5))),
        "straight_lines": _straight_line_length(sharp_grey, mask, work_frame.unit),
    }


def _straight_line_length(grey: np.ndarray, mask: np.ndarray, unit: float) -> float:
    """Total length of long straight background edges, per square root of background area (scale-free)."""
    edges = canny(grey, sigma=1.0, low_threshold=4.0, high_threshold=10.0) & mask
    if not edges.any():
        return 0.0
    segments = probabilistic_hough_line(
        edges, threshold=10, line_length=max(3, round(MIN_LINE * unit)), line_gap=1, rng=0
    )  # fixed seed: the same image always scores the same
    length = sum(float(np.hypot(x1 - x0, y1 - y0)) for (x0, y0), (x1, y1) in segments)
    return length / float(np.sqrt(mask.sum()))


def _coherence(gx: np.ndarray, gy: np.ndarray, mask: np.ndarray, radius: int) -> float:
    """Energy-weighted orientation coherence ((l1 - l2) / (l1 + l2) of the smoothed structure tensor)."""
    jxx, jyy, jxy = (box_blur(v, radius) for v in (gx * gx, gy * gy, gx * gy))
    trace = jxx + jyy
    coherence = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (trace + 1e-6)
    weight = trace[mask]
    if weight.sum() <= 1e-6:
        return 1.0  # a perfectly flat background: nothing incoherent in it
    return float((coherence[mask] * weight).sum() / weight.sum())


def _blob_share(magnitude: np.ndarray, mask: np.ndarray) -> float:
    """Share of textured background pixels that sit in small islands surrounded by smooth areas."""
    textured = (magnitude > 6.0) & mask
    if textured.sum() == 0:
        return 0.0
    image = Image.fromarray((textured * 255).astype(np.uint8))
    # a pixel whose 9x9 neighbourhood is mostly smooth belongs to an island, not to a continuing structure
    neighbourhood = np.asarray(image.filter(ImageFilter.BoxBlur(4)), dtype=np.float64) / 255.0
    return float(((neighbourhood < 0.25) & textured).sum() / textured.sum())


def background_check(image: np.ndarray, face: Optional[Face]) -> CheckResult:
    """Score how GAN-like the background is: blank, smeared or incoherent (see the module docstring)."""
    if face is None:
        return CheckResult("background", None, "No face found, so face and background cannot be told apart.")
    features = background_features(image, face)
    if features is None:
        return CheckResult("background", None, "The face fills the frame: too little background to judge.")
    score = check_weights("background").score(features)
    # what a person can see in the background, then how far this weighs (the score is weak evidence)
    if features["edge_density"] < 0.02:
        seen = "The background is blank (almost no texture or edges)"
    elif features["straight_lines"] >= STRAIGHT_SCENE:
        seen = (
            "The background has long straight edges that continue (walls, frames, furniture), as in a real scene"
        )
    elif features["coherence_large"] < 0.35:
        seen = "The background is full of smeared structures that do not continue"
    else:
        seen = "The background has few long straight edges (rooms, windows and streets have many)"
    explanation = seen + (
        ": leans towards a GAN face, weakly (studio backdrops look alike)."
        if score >= 0.5
        else ": leans towards a real photo, weakly."
    )
    frame = FaceFrame.of(face)
    height, width = image.shape[:2]
    regions = (
        ("face and hair (excluded)", frame.box(0.0, -0.05, 1.7)),
        ("frame", (0.0, 0.0, float(width), float(height))),
    )
    return CheckResult("background", score, explanation, regions, features)
