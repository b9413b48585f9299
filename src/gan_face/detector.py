"""The Detector: owns the loaded parts (aligner, learnt views, checks, fusion) and runs the one scoring pipeline
that every front door goes through: :func:`is_synthetic`, :meth:`Detector.score_many`, ``gan-face scan``,
``gan-face serve``, Ray and the training wing's evaluation all hand it items and get :class:`Scored` back."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import chain, islice
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Generic,
    Iterable,
    Iterator,
    Literal,
    Optional,
    Sequence,
    TypeVar,
    Union,
)

import numpy as np

from ._math import score_logit
from .align import Face, FaceAligner, face_status
from .card import ModelCard
from .checks import CHECKS, run_checks
from .errors import AnalysisError, GanFaceError
from .io import DEFAULT_MAX_PIXELS, ImageInput, describe_source, load_image
from .result import CheckResult, NotComputed, Verdict

if TYPE_CHECKING:
    from .clip import ClipScorer
    from .cnn import CnnScorer

log = logging.getLogger(__name__)

#: Images scored together (detection and CNN batches); every batching caller defaults to this.
DEFAULT_BATCH_SIZE = 32
#: With ``explain="auto"``, the checks that carry no weight in the likelihood (they only explain) are computed for
#: images whose log-odds are at most this far below the threshold's: flagged images and those near the line.
#: 2.0 is odds within a factor of e^2 ~ 7.4: likelihood >= 0.90 at the shipped threshold 0.9876.
EXPLAIN_MARGIN = 2.0

#: Which images get the checks that only explain the likelihood: ``"all"`` of them, or (``"auto"``) those flagged
#: or near the threshold.
ExplainPolicy = Literal["all", "auto"]
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Scored(Generic[T]):
    """One item through the pipeline: the item as the caller gave it, its decoded image (``None`` when it could
    not be read) and its result: a :class:`Verdict`, or the :class:`GanFaceError` that names what went wrong."""

    item: T
    image: Optional[np.ndarray]
    result: Union[Verdict, GanFaceError]


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last one shorter): how every stream of images is cut into batches."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _as_is(item: Any) -> Any:
    return item


def _renamed(old: str, new: str, value: Any) -> Any:
    warnings.warn(f"Detector({old}=...) is now Detector({new}=...)", DeprecationWarning, stacklevel=3)
    return value


class Detector:
    """Scores images for generated faces (GANs, diffusion models). Build it once and reuse it: loading costs about
    a second.

    ``weights``: ``None`` for the model shipped with the package, a shipped model's name (``"gan-face-v2"``), or
    the path of a fine-tuned model (its ``.safetensors`` or its ``.json`` card). ``device``: the OpenVINO device
    that runs the networks (default ``"cpu"``; ``"gpu"``: an Intel GPU; CUDA is refused, OpenVINO has no such
    device). ``threshold`` overrides the card's operating point for ``Verdict.synthetic``.

    ``explain``: ``"all"`` (default) computes every check for every image. ``"auto"`` computes the evidence the
    likelihood is made of (in the shipped model the learnt views and the eye position) for every image, and the
    checks that only explain (symmetry, background, spectrum) for the images that are flagged or near the
    threshold (:data:`EXPLAIN_MARGIN`); elsewhere they are :class:`~gan_face.result.NotComputed` results, score
    ``None``, saying so. Likelihoods and flags are the same either way.

    ``threads``: how many threads score batches side by side (each decoding and scoring a whole batch); every
    network is compiled to run that many inferences at once, one thread each, so a detector keeps about
    ``threads`` cores busy (:func:`gan_face._runtime.configure_threads` gives the command line's).

    ``checks`` and ``workers`` are the old names of ``explain`` and ``threads`` (before 0.2), accepted with a
    warning for one release.
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        device: Optional[str] = None,
        *,
        threshold: Optional[float] = None,
        max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
        explain: ExplainPolicy = "all",
        threads: int = 1,
        checks: Optional[ExplainPolicy] = None,
        workers: Optional[int] = None,
    ) -> None:
        if checks is not None:
            explain = _renamed("checks", "explain", checks)
        if workers is not None:
            threads = _renamed("workers", "threads", workers)
        if explain not in ("all", "auto"):
            raise ValueError(f"explain must be 'all' or 'auto', got {explain!r}")
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.card: ModelCard = ModelCard.load(weights)
        self.threshold = self.card.threshold if threshold is None else float(threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        self.max_pixels = max_pixels
        self.device = device
        self.explain: ExplainPolicy = explain
        self.threads = int(threads)
        # the clip view's encoder is the slowest network to build and compile: it compiles on a thread of its own
        # while the others do (OpenVINO compiles without holding the GIL), which shortens a scan's start-up
        clip_loading = second_loading = None
        if self.card.clip is not None:  # the frozen CLIP encoder and its linear head: evidence "clip"
            from .clip import load_clip

            loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gan-face-clip")
            clip_loading = loader.submit(load_clip, self.card, device, streams=self.threads)
            if self.card.second_look is not None:  # the same encoder at a higher resolution: "second_look"
                second = functools.partial(load_clip, second_look=True)
                second_loading = loader.submit(second, self.card, device, streams=self.threads)
            loader.shutdown(wait=False)
        # each network runs as many inferences at once as there are threads, one thread each
        self.aligner = FaceAligner(self.card.face_search, device=device, streams=self.threads)
        self.check_names = tuple(CHECKS)
        weighted = set(self.card.fusion.features)
        #: the checks the likelihood is made of, always computed; the others only explain
        self.weighted_checks = tuple(name for name in self.check_names if name in weighted)
        self.explaining_checks = tuple(name for name in self.check_names if name not in weighted)
        #: the learnt views by name: the CNN on the face (``"cnn"``), on the frame (``"frame"``), the clip view
        self.views: dict[str, Union["CnnScorer", "ClipScorer"]] = {}
        if names := tuple(self.card.networks()):
            from .cnn import load_cnn

            self.views = {name: load_cnn(self.card, device, network=name, streams=self.threads) for name in names}
        if clip_loading is not None:
            self.views["clip"] = clip_loading.result()
        #: the second look (:class:`gan_face.card.SecondLook`), for the images the first leaves near the line
        self.second_look: Optional["ClipScorer"] = None if second_loading is None else second_loading.result()

    @property
    def evidence_names(self) -> tuple[str, ...]:
        """The evidence every Verdict of this detector carries, in report order: learnt views (and the second
        look), then checks."""
        return tuple(self.views) + (("second_look",) if self.second_look else ()) + self.check_names

    # ------------------------------------------------------------------------------------------ front doors

    def score(self, image: ImageInput) -> Verdict:
        """Score one image (a path, bytes, a binary file, a PIL image or an RGB array).

        Raises a :class:`~gan_face.errors.GanFaceError` subclass naming the input when it cannot be read.
        """
        (scored,) = self.score_batch([image])
        if isinstance(scored.result, GanFaceError):
            raise scored.result
        return scored.result

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
        most ``threads + 1`` batches are held in memory.
        """
        for scored in self.score_stream(images, batch_size=batch_size):
            if errors == "raise" and scored.image is None:
                raise scored.result  # type: ignore[misc]  an unreadable input: always an error
            yield scored.result

    # ------------------------------------------------------------------------------------------ the pipeline

    def score_stream(
        self,
        items: Iterable[T],
        *,
        source: Callable[[T], ImageInput] = _as_is,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> Iterator[Scored[T]]:
        """The one scoring pipeline: ``items`` cut into batches (:func:`batched`), each read, decoded and scored,
        yielded in input order as :class:`Scored`.

        ``source(item)`` gives what to decode (a path, bytes, ...; default: the item itself); it may raise a
        :class:`GanFaceError` for an item known to be unreadable. With ``threads > 1`` that many threads each
        decode and score whole batches, so decoding overlaps scoring without a thread pool of its own; at most
        ``threads + 1`` batches are in memory. A stream of one batch is scored on the calling thread.
        """
        batches = batched(items, batch_size)
        if self.threads == 1:
            for batch in batches:
                yield from self.score_batch(batch, source=source)
            return
        first, second = next(batches, None), next(batches, None)
        if second is None:  # one batch: nothing to overlap
            yield from self.score_batch(first or [], source=source)
            return
        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="gan-face") as pool:
            pending: deque = deque()
            try:
                for batch in chain((first, second), batches):
                    pending.append(pool.submit(self.score_batch, batch, source=source))
                    if len(pending) > self.threads:
                        yield from pending.popleft().result()
                while pending:
                    yield from pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()

    def score_batch(self, items: Sequence[T], *, source: Callable[[T], ImageInput] = _as_is) -> list[Scored[T]]:
        """One batch through the pipeline, on the calling thread (``gan-face serve``'s batcher threads choose
        their batches themselves): each item decoded (or its error kept in its place), the images scored
        together. If the batch as a whole fails (an image that trips the face detector or a network), each
        image is scored alone and the one that fails becomes an :class:`AnalysisError` naming it: a batch
        never dies."""
        names: list[str] = []
        loaded: list[Union[np.ndarray, GanFaceError]] = []
        for item in items:
            what: Any = item
            try:
                what = source(item)
                loaded.append(load_image(what, max_pixels=self.max_pixels))
            except GanFaceError as exc:
                loaded.append(exc)
            names.append(describe_source(what))
        arrays = [image for image in loaded if isinstance(image, np.ndarray)]
        try:
            verdicts: list[Union[Verdict, GanFaceError]] = list(self._score_arrays(arrays))
        except Exception:  # noqa: BLE001  one bad image must not lose the others
            log.warning("batch of %d failed; scoring its images one by one", len(arrays), exc_info=True)
            array_names = [name for name, image in zip(names, loaded) if isinstance(image, np.ndarray)]
            verdicts = [self._score_alone(array, name) for array, name in zip(arrays, array_names)]
        remaining = iter(verdicts)
        return [
            Scored(item, image, next(remaining)) if isinstance(image, np.ndarray) else Scored(item, None, image)
            for item, image in zip(items, loaded)
        ]

    def _score_alone(self, image: np.ndarray, name: str) -> Union[Verdict, GanFaceError]:
        try:
            return self._score_arrays([image])[0]
        except Exception as exc:  # noqa: BLE001
            log.warning("analysis failed on %s", name, exc_info=True)
            return AnalysisError(name, f"analysis failed ({type(exc).__name__}: {exc})")

    def _score_arrays(self, images: Sequence[np.ndarray]) -> list[Verdict]:
        """Score RGB ``uint8`` arrays that are already loaded (as :func:`gan_face.io.load_image` returns them).

        Each image's result depends on that image alone, not on the others in the call.
        """
        all_faces = self.aligner.detect_batch(list(images))
        mains = [faces[0] if faces else None for faces in all_faces]
        by_view = [view.score_faces(images, mains) for view in self.views.values()]
        learnt_results = [{r.name: r for r in results} for results in zip(*by_view)] or [{} for _ in images]
        weighed = [run_checks(image, face, self.weighted_checks) for image, face in zip(images, mains)]
        if self.second_look is not None:
            self._look_again(images, mains, learnt_results, weighed)
        verdicts = []
        for image, faces, face, learnt, results in zip(images, all_faces, mains, learnt_results, weighed):
            if self.explain == "all":
                results.update(run_checks(image, face, self.explaining_checks))
                verdicts.append(self._verdict(image, faces, learnt, results))
                continue
            deferred = {name: NotComputed.of(name) for name in self.explaining_checks}
            verdict = self._verdict(image, faces, learnt, {**results, **deferred})
            if deferred and self._wants_explanation(verdict.likelihood):
                results.update(run_checks(image, face, self.explaining_checks))
                verdict = self._verdict(image, faces, learnt, results)
            verdicts.append(verdict)
        return verdicts

    def _look_again(
        self,
        images: Sequence[np.ndarray],
        faces: Sequence[Optional[Face]],
        learnt: list[dict[str, CheckResult]],
        weighed: list[dict[str, CheckResult]],
    ) -> None:
        """Add the second look to ``learnt``: computed for the images whose first likelihood lies in the card's
        band below its threshold (the card's threshold, whatever ``threshold`` a caller chose: the band is where
        the first look was fitted to be unsure), a :class:`NotComputed` saying why elsewhere."""
        assert self.second_look is not None and self.card.second_look is not None
        band_from, fusion = self.card.second_look.band_from, self.card.fusion
        wanted, firsts = [], []
        for i, (face, found, checked) in enumerate(zip(faces, learnt, weighed)):
            scores = {name: result.score for name, result in {**found, **checked}.items()}
            first = fusion.likelihood(scores) if fusion.has_evidence(scores) else None
            if face is not None and first is not None and band_from <= first < self.card.threshold:
                wanted.append(i)
                firsts.append(first)
            else:
                found["second_look"] = NotComputed(
                    "second_look",
                    None,
                    "Not needed: the first look left this image clearly on one side of the threshold."
                    if first is not None
                    else "No face found, so there was nothing to look at again.",
                )
        results = self.second_look.score_faces([images[i] for i in wanted], [faces[i] for i in wanted])
        for i, first, result in zip(wanted, firsts, results):  # the first look's likelihood, kept to show
            details = {**result.details, "first_likelihood": first}
            learnt[i]["second_look"] = dataclasses.replace(result, details=details)

    def _wants_explanation(self, likelihood: Optional[float]) -> bool:
        """Whether ``explain="auto"`` computes the explaining checks for an image of this likelihood."""
        if likelihood is None:
            return True
        return score_logit(likelihood) >= score_logit(self.threshold) - EXPLAIN_MARGIN

    def _verdict(
        self,
        image: np.ndarray,
        faces: list[Face],
        learnt: dict[str, CheckResult],
        check_results: dict[str, CheckResult],
    ) -> Verdict:
        # the learnt views' evidence first, then the checks' in report order
        evidence: dict[str, CheckResult] = dict(learnt)
        evidence.update((name, check_results[name]) for name in self.check_names if name in check_results)
        scores = {name: result.score for name, result in evidence.items()}
        fusion = self.card.fusion_for(scores)
        return Verdict(
            likelihood=fusion.likelihood(scores) if fusion.has_evidence(scores) else None,
            threshold=self.threshold,
            status=face_status(faces),
            face=faces[0] if faces else None,
            evidence=evidence,
            contributions=fusion.contributions(scores),
            image_size=(image.shape[1], image.shape[0]),
            cant_tell_from=self.card.cant_tell_from,
        )


@functools.lru_cache(maxsize=4)
def _shared_detector(weights: Optional[str], device: Optional[str]) -> Detector:
    return Detector(weights=weights, device=device)


def is_synthetic(
    image: ImageInput,
    *,
    detector: Optional[Detector] = None,
    weights: str | os.PathLike[str] | None = None,
    device: Optional[str] = None,
    threshold: Optional[float] = None,
) -> Verdict:
    """Score one image and return its :class:`Verdict`; ``bool(verdict)`` tells whether it is flagged as
    generated.

    ``detector``: a :class:`Detector` the caller built (and reuses); without one, a detector for ``weights`` and
    ``device`` is built on the first call and shared by later calls (passing ``weights`` or ``device`` with a
    ``detector`` is refused: the detector already has them). ``threshold`` overrides the operating point for
    this verdict.
    """
    if detector is None:
        detector = _shared_detector(None if weights is None else os.fspath(weights), device)
    elif weights is not None or device is not None:
        raise ValueError("is_synthetic: give a detector or weights/device, not both (the detector has its own)")
    verdict = detector.score(image)
    if threshold is not None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        verdict = dataclasses.replace(verdict, threshold=float(threshold))
    return verdict
