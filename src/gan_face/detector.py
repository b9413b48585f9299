"""The Detector: owns the loaded parts (aligner, CNN, checks, fusion) and scores images one by one or in
batches."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator, Literal, Optional, Sequence, Union

import numpy as np

from .align import Face, FaceAligner, has_other_prominent_face
from .card import ModelCard
from .checks import CHECKS, run_checks
from .errors import AnalysisError, GanFaceError
from .io import DEFAULT_MAX_PIXELS, ImageInput, load_image
from .result import CheckResult, Status, Verdict

log = logging.getLogger(__name__)

#: Faces smaller than this (box side in pixels of the original image) carry too little detail to judge well.
MIN_FACE_PIXELS = 40
#: MTCNN confidences below this are often not faces at all (a pattern, a statue, a cartoon).
MIN_FACE_CONFIDENCE = 0.95
#: Images scored together (detection and CNN batches); every batching caller defaults to this.
DEFAULT_BATCH_SIZE = 32


class Detector:
    """Scores images for GAN-generated faces. Build it once and reuse it: loading costs about a second.

    ``weights``: ``None`` for the model shipped with the package, or the path of a fine-tuned model (its
    ``.safetensors`` or its ``.json`` card). ``device``: ``"cpu"``, ``"cuda"``, ... (default: CPU).
    ``threshold`` overrides the card's operating point for ``Verdict.synthetic``.
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        device: Optional[str] = None,
        *,
        threshold: Optional[float] = None,
        max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.card: ModelCard = ModelCard.load(weights)
        self.threshold = self.card.threshold if threshold is None else float(threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        self.max_pixels = max_pixels
        self.device = device
        self.aligner = FaceAligner(self.card.detector, device=device)
        self.check_names = tuple(name for name in CHECKS if name != "cnn")
        self.cnn = None
        if self.card.cnn is not None:
            from .cnn import load_cnn

            self.cnn = load_cnn(self.card, device=device)

    @property
    def report_check_names(self) -> tuple[str, ...]:
        """The evidence every Verdict of this detector carries, in report order."""
        return (("cnn",) if self.cnn is not None else ()) + self.check_names

    def score(self, image: ImageInput) -> Verdict:
        """Score one image (a path, bytes, a binary file, a PIL image or an RGB array).

        Raises a :class:`~gan_face.errors.GanFaceError` subclass naming the input when it cannot be read.
        """
        (result,) = self.score_many([image], batch_size=1)
        if isinstance(result, GanFaceError):  # the analysis itself failed
            raise result
        return result

    def score_many(
        self,
        images: Iterable[ImageInput],
        batch_size: int = DEFAULT_BATCH_SIZE,
        *,
        errors: Literal["raise", "return"] = "raise",
    ) -> Iterator[Union[Verdict, GanFaceError]]:
        """Score a stream of images in batches; results come in input order, one per image.

        With ``errors="return"`` an unreadable input yields its :class:`GanFaceError` in its place and the
        stream goes on; with ``"raise"`` (default) the error is raised once the images before it are yielded.
        An image the analysis fails on yields an :class:`~gan_face.errors.AnalysisError` in either mode. Only
        one batch is held in memory.
        """
        batch: list[ImageInput] = []
        for image in images:
            batch.append(image)
            if len(batch) >= batch_size:
                yield from self._score_batch(batch, errors)
                batch = []
        if batch:
            yield from self._score_batch(batch, errors)

    def _score_batch(self, sources: Sequence[ImageInput], errors: str) -> Iterator[Union[Verdict, GanFaceError]]:
        loaded: list[Union[np.ndarray, GanFaceError]] = []
        for source in sources:
            try:
                loaded.append(load_image(source, max_pixels=self.max_pixels))
            except GanFaceError as exc:
                if errors == "raise":  # first yield what came before it, in order, then raise
                    yield from self.score_loaded(loaded)
                    raise
                loaded.append(exc)
        yield from self.score_loaded(loaded)

    def score_loaded(
        self, loaded: Sequence[Union[np.ndarray, GanFaceError]]
    ) -> list[Union[Verdict, GanFaceError]]:
        """Score the arrays among ``loaded`` and keep the errors in their places.

        If the batch as a whole fails (an image that trips the face detector or the CNN), each image is scored
        alone and the one that fails becomes an :class:`AnalysisError` in its place: a batch never dies.
        """
        arrays = [item for item in loaded if isinstance(item, np.ndarray)]
        try:
            verdicts: list[Union[Verdict, GanFaceError]] = list(self.score_arrays(arrays))
        except Exception:  # noqa: BLE001  one bad image must not lose the others
            log.warning("batch of %d failed; scoring its images one by one", len(arrays), exc_info=True)
            verdicts = []
            for index, array in enumerate(arrays):
                try:
                    verdicts.extend(self.score_arrays([array]))
                except Exception as exc:  # noqa: BLE001
                    log.warning("analysis failed on image %d of the batch", index, exc_info=True)
                    verdicts.append(
                        AnalysisError(
                            f"<image {array.shape[1]}x{array.shape[0]}>",
                            f"analysis failed ({type(exc).__name__}: {exc})",
                        )
                    )
        remaining = iter(verdicts)
        return [next(remaining) if isinstance(item, np.ndarray) else item for item in loaded]

    def score_arrays(self, images: Sequence[np.ndarray]) -> list[Verdict]:
        """Score RGB ``uint8`` arrays that are already loaded (as :func:`gan_face.io.load_image` returns them).

        The forensic checks (numpy, mostly outside the GIL) run on a thread pool while the CNN runs, so both
        cores stay busy.
        """
        all_faces = self.aligner.detect_batch(list(images))
        mains = [faces[0] if faces else None for faces in all_faces]
        pending = [
            self._check_pool.submit(run_checks, image, face, self.check_names)
            for image, face in zip(images, mains)
        ]
        cnn_results = self.cnn.score_faces(images, mains) if self.cnn is not None else [None] * len(images)
        return [
            self._verdict(image, faces, cnn, checks.result())
            for image, faces, cnn, checks in zip(images, all_faces, cnn_results, pending)
        ]

    @functools.cached_property
    def _check_pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=2, thread_name_prefix="gan-face-checks")

    def _verdict(
        self,
        image: np.ndarray,
        faces: list[Face],
        cnn: Optional[CheckResult],
        check_results: dict[str, CheckResult],
    ) -> Verdict:
        face = faces[0] if faces else None
        checks: dict[str, CheckResult] = {} if cnn is None else {"cnn": cnn}
        checks.update(check_results)
        scores = {name: result.score for name, result in checks.items()}
        fusion = self.card.fusion
        return Verdict(
            likelihood=fusion.likelihood(scores) if fusion.has_evidence(scores) else None,
            threshold=self.threshold,
            status=face_status(faces),
            face=face,
            checks=checks,
            contributions=fusion.contributions(scores),
            image_size=(image.shape[1], image.shape[0]),
        )


def face_status(faces: Sequence[Face]) -> Status:
    if not faces:
        return "no_face"
    main = faces[0]
    if main.size < MIN_FACE_PIXELS or main.confidence < MIN_FACE_CONFIDENCE:
        return "low_quality"
    if has_other_prominent_face(faces):
        return "multiple_faces"
    return "ok"


@functools.lru_cache(maxsize=4)
def _shared_detector(weights: Optional[str], device: Optional[str]) -> Detector:
    return Detector(weights=weights, device=device)


def is_synthetic(
    image: ImageInput,
    *,
    weights: str | os.PathLike[str] | None = None,
    device: Optional[str] = None,
    threshold: Optional[float] = None,
) -> Verdict:
    """Score one image with a detector shared across calls (built on the first call).

    Returns a :class:`Verdict`; ``bool(verdict)`` tells whether it is flagged as GAN-generated.
    """
    detector = _shared_detector(None if weights is None else os.fspath(weights), device)
    verdict = detector.score(image)
    if threshold is not None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        verdict = dataclasses.replace(verdict, threshold=float(threshold))
    return verdict
