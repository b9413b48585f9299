"""Face detection (MTCNN: facenet-pytorch's networks and weights, run by ``_mtcnn`` on OpenVINO) and FFHQ-style
alignment by a similarity transform.

Conventions, used by every check:

* Coordinates are pixels of the loaded image (``x`` to the right, ``y`` down), floats.
* ``left``/``right`` are **as seen by the viewer**: ``left_eye`` is the eye nearer the image's left edge, which is
  the subject's own right eye. MTCNN returns the points in that order.

MTCNN is wrapped because its raw API is awkward: it returns ``None`` for "no face", object arrays, and needs every
image of a batch to have one size. We detect on a copy scaled so its longer side is ``detect_size`` and letterboxed
onto a square canvas, so any mix of sizes and aspect ratios batches together, then map the points back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np
from PIL import Image

from .graphs.runtime import runtime_device

Point = tuple[float, float]

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
#: MTCNN confidence from which a detection counts as a real face when ordering faces and counting them.
CONFIDENT_FACE = 0.9
#: Faces smaller than this (box side in pixels of the original image) carry too little detail to judge well.
MIN_FACE_PIXELS = 40
#: MTCNN confidences below this are often not faces at all (a pattern, a statue, a cartoon).
MIN_FACE_CONFIDENCE = 0.95

#: What the face search found, as a verdict reports it.
Status = Literal["ok", "no_face", "multiple_faces", "low_quality"]
STATUSES: tuple[str, ...] = ("ok", "no_face", "multiple_faces", "low_quality")

#: Where the five landmarks go in the aligned crop, as fractions of its side. An ArcFace-like template with more
#: margin: the whole face from brows to chin and the cheeks, little hair or background (those are other checks'
#: evidence, and a tight crop stays inside the frame of tightly cropped photos, so padding is rarely needed).
CROP_TEMPLATE = np.array(
    [
        [0.3425, 0.4050],  # left eye
        [0.6575, 0.4050],  # right eye
        [0.5000, 0.5750],  # nose tip
        [0.3700, 0.7250],  # mouth, left corner
        [0.6300, 0.7250],  # mouth, right corner
    ],
    dtype=np.float64,
)


@dataclass(frozen=True)
class FaceSearchSettings:
    """How faces are searched for; stored in every model card, because the CNN learnt on crops found this way.

    ``detect_size`` is the longer side of the copy MTCNN sees (smaller is faster; faces smaller than
    ``min_face_size / detect_size`` of the longer side are missed, which suits avatars, not crowd photos).
    """

    detect_size: int = 192
    min_face_size: int = 24

    def to_dict(self) -> dict[str, int]:
        return {"detect_size": self.detect_size, "min_face_size": self.min_face_size}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> "FaceSearchSettings":
        return cls(detect_size=int(data["detect_size"]), min_face_size=int(data["min_face_size"]))  # type: ignore


#: The old name of :class:`FaceSearchSettings` (before 0.2), kept for one release.
DetectorSettings = FaceSearchSettings


@dataclass(frozen=True)
class Landmarks:
    """Five facial landmarks in image pixels; left/right as seen by the viewer."""

    left_eye: Point
    right_eye: Point
    nose: Point
    mouth_left: Point
    mouth_right: Point

    @classmethod
    def from_array(cls, points: np.ndarray) -> "Landmarks":
        pts = [(float(x), float(y)) for x, y in np.asarray(points, dtype=np.float64).reshape(5, 2)]
        return cls(*pts)

    def to_array(self) -> np.ndarray:
        """The points as a ``5 x 2`` array in :data:`LANDMARK_NAMES` order."""
        return np.array([self.left_eye, self.right_eye, self.nose, self.mouth_left, self.mouth_right])

    @property
    def interocular(self) -> float:
        return float(np.hypot(self.right_eye[0] - self.left_eye[0], self.right_eye[1] - self.left_eye[1]))

    def to_dict(self) -> dict[str, list[float]]:
        return {name: [round(v, 2) for v in getattr(self, name)] for name in LANDMARK_NAMES}


@dataclass(frozen=True)
class Face:
    """One detected face: box ``(x0, y0, x1, y1)`` in image pixels, MTCNN confidence and landmarks."""

    box: tuple[float, float, float, float]
    confidence: float
    landmarks: Landmarks

    @property
    def size(self) -> float:
        """Side of the box (geometric mean of width and height), in pixels."""
        x0, y0, x1, y1 = self.box
        return float(np.sqrt(max(x1 - x0, 0.0) * max(y1 - y0, 0.0)))

    def to_dict(self) -> dict[str, object]:
        return {
            "box": [round(v, 2) for v in self.box],
            "confidence": round(self.confidence, 4),
            "landmarks": self.landmarks.to_dict(),
        }


class FaceAligner:
    """Finds faces with MTCNN. Reusable and cheap to call; load it once per process.

    ``settings`` (:class:`FaceSearchSettings`) say at what size and how small a face is searched for.
    """

    def __init__(
        self,
        settings: FaceSearchSettings = FaceSearchSettings(),
        *,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        device: str | None = None,
        streams: int = 1,
    ) -> None:
        from ._mtcnn import load_nets, pyramid_levels  # compiles the networks: only when a detector is built

        self.settings = settings
        self.detect_size = settings.detect_size
        self.min_face_size = settings.min_face_size
        self.thresholds = tuple(thresholds)
        self.factor = 0.709  # MTCNN's scale step between pyramid levels
        self.device = device
        self.nets = load_nets(runtime_device(device), streams)
        # every canvas is letterboxed to detect_size, so P-Net's input sizes are known: compiled now (during a
        # detector's start-up, beside the clip encoder's compilation) rather than in the first batch
        side = self.detect_size
        self.nets.pnet.prepare(size for _, size in pyramid_levels(side, side, self.min_face_size, self.factor))

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in one RGB image, the main face first (see :func:`order_faces`). Empty list: no face."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces in each image of a batch of any sizes; one list (maybe empty) per image, in order."""
        if not images:
            return []
        canvases, scales = zip(*(self._letterbox(img) for img in images))  # scales: (sx, sy) per image
        from ._mtcnn import detect_faces

        detections = detect_faces(
            np.stack(canvases),
            self.nets,
            min_face_size=self.min_face_size,
            thresholds=self.thresholds,
            factor=self.factor,
        )
        faces = []
        for found, (sx, sy) in zip(detections, scales):
            faces.append(
                order_faces(
                    [
                        Face(
                            box=(float(box[0]) / sx, float(box[1]) / sy, float(box[2]) / sx, float(box[3]) / sy),
                            confidence=float(prob),
                            landmarks=Landmarks.from_array(np.asarray(pts, dtype=np.float64) / [sx, sy]),
                        )
                        for box, prob, pts in zip(found.boxes, found.probs, found.points)
                    ]
                )
            )
        return faces

    def _letterbox(self, image: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        height, width = image.shape[:2]
        scale = self.detect_size / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR, reducing_gap=2.0))
        canvas = np.zeros((self.detect_size, self.detect_size, 3), dtype=np.uint8)
        canvas[:new_h, :new_w] = resized
        return canvas, (new_w / width, new_h / height)  # exact per axis, rounding included


def order_faces(faces: Sequence[Face]) -> list[Face]:
    """The main face first: the largest confident face (a profile photo's subject fills the frame)."""
    return sorted(faces, key=lambda f: (f.confidence >= CONFIDENT_FACE, f.size), reverse=True)


def has_other_prominent_face(faces: Sequence[Face], *, min_relative_size: float = 0.5) -> bool:
    """True when a second confident face is at least ``min_relative_size`` times the main face's size."""
    if len(faces) < 2:
        return False
    main = faces[0]
    return any(f.confidence >= CONFIDENT_FACE and f.size >= min_relative_size * main.size for f in faces[1:])


def face_status(faces: Sequence[Face]) -> Status:
    """What the search found, main face first (:func:`order_faces`): none, one too small or unsure to judge
    well, one beside another prominent face, or one clear face."""
    if not faces:
        return "no_face"
    main = faces[0]
    if main.size < MIN_FACE_PIXELS or main.confidence < MIN_FACE_CONFIDENCE:
        return "low_quality"
    if has_other_prominent_face(faces):
        return "multiple_faces"
    return "ok"


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``source`` points onto ``target``.

    scikit-image's estimate (Umeyama's closed form, no reflection). Returns the ``2 x 3`` matrix ``M`` with
    ``target ~= M @ [x, y, 1]``.
    """
    from skimage.transform import SimilarityTransform

    transform = SimilarityTransform.from_estimate(
        np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    )
    if not transform:  # degenerate points (all in one place): no similarity fits them
        raise ValueError(f"no similarity transform fits these landmarks ({transform})")
    return transform.params[:2].copy()


def align_face(
    image: np.ndarray,
    landmarks: Landmarks,
    size: int = 224,
    template: np.ndarray = CROP_TEMPLATE,
) -> np.ndarray:
    """The face warped so its landmarks land on ``template`` (fractions of the side) in a ``size``-pixel square.

    Only the region the crop needs is touched. Downscaling is done first with an antialiasing filter, so a
    1024-px face and a 256-px face give crops of the same sharpness history; the small warp left is bicubic.
    Pixels outside the photo are filled by mirroring its border, which looks like the image, not like a frame.
    """
    to_crop = np.vstack([similarity_transform(landmarks.to_array(), template * size), [0.0, 0.0, 1.0]])
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64)
    in_source = (np.linalg.inv(to_crop) @ corners.T)[:2]
    x0, y0 = np.floor(in_source.min(axis=1)).astype(int) - 2
    x1, y1 = np.ceil(in_source.max(axis=1)).astype(int) + 2
    region = _region_with_mirrored_border(image, x0, y0, x1, y1)
    to_crop = to_crop @ np.array([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1]])  # region pixels -> crop pixels

    source = Image.fromarray(region)
    scale = float(np.sqrt(abs(np.linalg.det(to_crop[:2, :2]))))
    if scale < 0.8:  # shrink with an antialiasing filter first, then warp by what is left
        new_w = max(1, round(source.width * scale * 1.25))
        new_h = max(1, round(source.height * scale * 1.25))
        fx, fy = new_w / source.width, new_h / source.height
        source = source.resize((new_w, new_h), Image.BILINEAR, reducing_gap=None)
        to_crop = to_crop @ np.array([[1.0 / fx, 0, 0], [0, 1.0 / fy, 0], [0, 0, 1]])
    inverse = tuple(np.linalg.inv(to_crop)[:2].ravel())  # PIL maps output pixels back to input pixels
    return np.asarray(source.transform((size, size), Image.AFFINE, inverse, Image.BICUBIC))


def _region_with_mirrored_border(image: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` where the box may leave the image; the missing part mirrors the image."""
    height, width = image.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx0 == x0 and cy0 == y0 and cx1 == x1 and cy1 == y1:
        return np.ascontiguousarray(image[y0:y1, x0:x1])  # wholly inside: a plain slice
    if cx1 > cx0 and cy1 > cy0:  # overlapping: mirror the part inside at the image's own edges
        pads = ((cy0 - y0, y1 - cy1), (cx0 - x0, x1 - cx1), (0, 0))
        return np.pad(image[cy0:cy1, cx0:cx1], pads, mode="symmetric")
    return image[np.ix_(_mirrored_indices(y0, y1, height), _mirrored_indices(x0, x1, width))]


def _mirrored_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Indices ``start..stop-1`` folded back into ``0..size-1`` by mirroring at the edges (period ``2 * size``)."""
    index = np.mod(np.arange(start, stop), 2 * size)
    return np.where(index < size, index, 2 * size - 1 - index)
