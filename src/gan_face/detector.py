"""The Detector: owns the loaded parts (aligner, CNNs, checks, fusion) and scores images one by one or in
batches."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Literal, Optional, Sequence, TypeVar, Union

import numpy as np

from ._math import score_logit
from .align import Face, FaceAligner, has_other_prominent_face
from .card import ModelCard
from .checks import CHECKS, NotComputed, run_checks
from .errors import AnalysisError, GanFaceError
from .io import DEFAULT_MAX_PIXELS, ImageInput, load_image
from .result import CheckResult, Status, Verdict

if TYPE_CHECKING:
    from .clip import ClipScorer
    from .cnn import CnnScorer

log = logging.getLogger(__name__)

#: Faces smaller than this (box side in pixels of the original image) carry too little detail to judge well.
MIN_FACE_PIXELS = 40
#: MTCNN confidences below this are often not faces at all (a pattern, a statue, a cartoon).
MIN_FACE_CONFIDENCE = 0.95
#: Images scored together (detection and CNN batches); every batching caller defaults to this.
DEFAULT_BATCH_SIZE = 32
#: With ``checks="auto"``, the checks that carry no weight in the likelihood (they only explain) are computed for
#: images whose log-odds are at most this far below the threshold's: flagged images and those near the line.
#: 2.0 is odds within a factor of e^2 ~ 7.4: likelihood >= 0.90 at the shipped threshold 0.9845.
EXPLAIN_MARGIN = 2.0

CheckPolicy = Literal["all", "auto"]
T = TypeVar("T")


class Detector:
    """Scores images for GAN-generated faces. Build it once and reuse it: loading costs about a second.

    ``weights``: ``None`` for the model shipped with the package, or the path of a fine-tuned model (its
    ``.safetensors`` or its ``.json`` card). ``device``: the OpenVINO device that runs the networks (default
    ``"cpu"``; ``"gpu"``: an Intel GPU; CUDA is refused, OpenVINO has no such device).
    ``threshold`` overrides the card's operating point for ``Verdict.synthetic``.

    ``checks``: ``"all"`` (default) computes every check for every image. ``"auto"`` computes the evidence the
    likelihood is made of (in the shipped model the two CNNs and the eye position) for every image, and the checks
    that only explain (symmetry, background, spectrum) for the images that are flagged or near the threshold
    (:data:`EXPLAIN_MARGIN`); elsewhere they are :class:`~gan_face.checks.NotComputed` results, score ``None``,
    saying so. Likelihoods and flags are the same either way.

    ``workers``: how many threads score batches side by side in :meth:`score_many` (each decoding and scoring a
    whole batch); every network is compiled to run that many inferences at once, one thread each, so a detector
    keeps about ``workers`` cores busy (:func:`gan_face._runtime.configure_threads` gives the command line's).
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        device: Optional[str] = None,
        *,
        threshold: Optional[float] = None,
        max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
        checks: CheckPolicy = "all",
        workers: int = 1,
    ) -> None:
        if checks not in ("all", "auto"):
            raise ValueError(f"checks must be 'all' or 'auto', got {checks!r}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.card: ModelCard = ModelCard.load(weights)
        self.threshold = self.card.threshold if threshold is None else float(threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        self.max_pixels = max_pixels
        self.device = device
        # the clip view's encoder is the slowest network to build and compile: it compiles on a thread of its own
        # while the others do (OpenVINO compiles without holding the GIL), which shortens a scan's start-up
        clip_loading = None
        if self.card.clip is not None:  # the frozen CLIP encoder and its linear head: evidence "clip"
            from .clip import load_clip

            loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gan-face-clip")
            clip_loading = loader.submit(load_clip, self.card, device, streams=int(workers))
            loader.shutdown(wait=False)
        # each network runs as many inferences at once as there are workers, one thread each
        self.aligner = FaceAligner(self.card.detector, device=device, streams=int(workers))
        self.check_names = tuple(name for name in CHECKS if name != "cnn")
        self.checks = checks
        self.workers = int(workers)
        weighted = set(self.card.fusion.features)
        #: the checks the likelihood is made of, always computed; the others only explain
        self.weighted_checks = tuple(name for name in self.check_names if name in weighted)
        self.explaining_checks = tuple(name for name in self.check_names if name not in weighted)
        #: the learnt evidence by name: the CNN on the face (``"cnn"``) and, if the model has one, on the frame
        self.networks: dict[str, Union["CnnScorer", "ClipScorer"]] = {}
        if names := tuple(self.card.networks()):
            from .cnn import load_cnn

            self.networks = {
                name: load_cnn(self.card, device, network=name, streams=int(workers)) for name in names
            }
        if clip_loading is not None:
            self.networks["clip"] = clip_loading.result()

    @property
    def report_check_names(self) -> tuple[str, ...]:
        """The evidence every Verdict of this detector carries, in report order."""
        return tuple(self.networks) + self.check_names

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
        An image the analysis fails on yields an :class:`~gan_face.errors.AnalysisError` in either mode. At
        most ``workers + 1`` batches are held in memory.
        """

        def load(source: ImageInput) -> Union[np.ndarray, GanFaceError]:
            try:
                return load_image(source, max_pixels=self.max_pixels)
            except GanFaceError as exc:
                return exc

        for _, loaded, results in self.score_batches(_batches(images, batch_size), load):
            for item, result in zip(loaded, results):
                if errors == "raise" and isinstance(item, GanFaceError):
                    raise item
                yield result

    def score_batches(
        self, batches: Iterable[Sequence[T]], load: Callable[[T], Union[np.ndarray, GanFaceError]]
    ) -> Iterator[tuple[Sequence[T], list[Union[np.ndarray, GanFaceError]], list[Union[Verdict, GanFaceError]]]]:
        """For each batch of items, in order: the batch, its loaded images (``load(item)``: an array or an
        error) and their results (:meth:`score_loaded`).

        With ``workers > 1``, that many threads each load and score whole batches, so decoding overlaps
        scoring without a thread pool of its own; at most ``workers + 1`` batches are in memory.
        """

        def run(batch: Sequence[T]):
            loaded = [load(item) for item in batch]
            return batch, loaded, self.score_loaded(loaded)

        if self.workers == 1:
            for batch in batches:
                yield run(batch)
            return
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="gan-face") as pool:
            pending: deque = deque()
            try:
                for batch in batches:
                    pending.append(pool.submit(run, batch))
                    if len(pending) > self.workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()

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

        Each image's result depends on that image alone, not on the others in the call.
        """
        all_faces = self.aligner.detect_batch(list(images))
        mains = [faces[0] if faces else None for faces in all_faces]
        by_network = [scorer.score_faces(images, mains) for scorer in self.networks.values()]
        learnt_results = [{r.name: r for r in results} for results in zip(*by_network)] or [{} for _ in images]
        verdicts = []
        for image, faces, face, learnt in zip(images, all_faces, mains, learnt_results):
            results = run_checks(image, face, self.weighted_checks)
            if self.checks == "all":
                results.update(run_checks(image, face, self.explaining_checks))
                verdicts.append(self._ordered_verdict(image, faces, learnt, results))
                continue
            deferred = {name: NotComputed.of(name) for name in self.explaining_checks}
            verdict = self._ordered_verdict(image, faces, learnt, {**results, **deferred})
            if deferred and self.wants_explanation(verdict.likelihood):
                results.update(run_checks(image, face, self.explaining_checks))
                verdict = self._ordered_verdict(image, faces, learnt, results)
            verdicts.append(verdict)
        return verdicts

    def wants_explanation(self, likelihood: Optional[float]) -> bool:
        """Whether ``checks="auto"`` computes the explaining checks for an image of this likelihood."""
        if likelihood is None:
            return True
        return score_logit(likelihood) >= score_logit(self.threshold) - EXPLAIN_MARGIN

    def _ordered_verdict(self, image, faces, learnt, results: dict[str, CheckResult]) -> Verdict:
        ordered = {name: results[name] for name in self.check_names if name in results}
        return self._verdict(image, faces, learnt, ordered)

    def _verdict(
        self,
        image: np.ndarray,
        faces: list[Face],
        learnt: dict[str, CheckResult],
        check_results: dict[str, CheckResult],
    ) -> Verdict:
        face = faces[0] if faces else None
        checks: dict[str, CheckResult] = dict(learnt)  # the networks' evidence first, then the checks'
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


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


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
