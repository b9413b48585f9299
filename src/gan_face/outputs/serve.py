"""``gan-face serve``: the detector as a local service, a page to drop avatars on and an HTTP API for pipelines.

One :class:`~gan_face.detector.Detector` per process. Requests put their images on a queue; ``threads`` batcher
threads (``--threads``) each take what is waiting, up to ``batch_size`` images shared with the other idle threads,
and decode and score it as one batch, as each worker of ``gan-face scan`` does (every network inference on one
thread). So concurrent clients share the cores, and a file's row over HTTP is the row ``gan-face scan`` writes for
it (a file's likelihood does not depend on the files scored beside it).

Uploads stay in memory, or in the multipart parser's temporary files (unlinked, gone when closed); nothing is
written anywhere else. The request body is counted while it is read and refused past ``max_upload_bytes``;
images are refused from their header past ``max_pixels``; a request holds at most ``max_files`` images, and at
most ``max_queue`` images wait at once (beyond that: 503, try again).

Errors are JSON ``{"error": code, "detail": message}``; the message names the upload's file name:

====  =====================================================================================
400   ``no_file``: no multipart field ``file`` or ``files``; ``bad_request``: a malformed form
413   ``upload_too_large`` (the body), ``too_many_files``, ``too_many_pixels`` (the image)
415   ``not_an_image``: the content is in no image format we read (recognised by content)
422   ``corrupt_image``: an image format, but damaged, truncated or empty
500   ``analysis_failed``: the image loaded but scoring it failed
503   ``busy``: too many images waiting; retry later
====  =====================================================================================

FastAPI, uvicorn and python-multipart are the ``[serve]`` extra: this module is imported only when the server
runs (``gan-face serve``), never by ``import gan_face`` or a scan.
"""

import asyncio
import contextlib
import functools
import io
import ipaddress
import logging
import queue
import socket
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional, Sequence, Union

import python_multipart  # noqa: F401  the multipart parser FastAPI needs for uploads: missing means no [serve] extra
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..detector import Detector
from ..errors import (
    AnalysisError,
    CorruptImageError,
    GanFaceError,
    ImageTooLargeError,
    NotAnImageError,
    UnsupportedInputError,
)
from ..files import safe_text
from ..io import DEFAULT_MAX_PIXELS
from ..result import Verdict
from .report import columns_for, csv_header, csv_line, error_row, jsonl_line, verdict_row
from .report_html import environment, jpeg_b64, make_thumbnail, render_card

log = logging.getLogger(__name__)

#: Images per detector batch in the server: small, so that a lone request is answered fast.
SERVE_BATCH_SIZE = 8
#: How long a request that came alone waits for others to share its batch (seconds): little beside its scoring.
GATHER_S = 0.01


@dataclass(frozen=True)
class Limits:
    """What one request may send, and how many images may wait; every default is safe to expose on loopback."""

    max_upload_bytes: int = 32 * 1024 * 1024
    max_files: int = 64
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS
    max_queue: int = 512

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1 or self.max_files < 1 or self.max_queue < 1:
            raise ValueError("upload size, files per request and queue length must be at least 1")


# ------------------------------------------------------------------------------------------------------ errors


class ApiError(StarletteHTTPException):
    """A request the server refuses: an HTTP status, a code a client can test and a message a person can read."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(status_code=status, detail=detail)
        self.code = code


#: typed load errors -> HTTP status and error code (first match wins: subclasses before their bases)
_STATUS_OF_ERROR: tuple[tuple[type, int, str], ...] = (
    (NotAnImageError, 415, "not_an_image"),
    (UnsupportedInputError, 415, "not_an_image"),
    (ImageTooLargeError, 413, "too_many_pixels"),
    (CorruptImageError, 422, "corrupt_image"),
    (AnalysisError, 500, "analysis_failed"),
)


def api_error(error: GanFaceError) -> ApiError:
    for kind, status, code in _STATUS_OF_ERROR:
        if isinstance(error, kind):
            return ApiError(status, code, safe_text(str(error)))
    return ApiError(422, "unreadable_image", safe_text(str(error)))


class ErrorBody(BaseModel):
    error: str = Field(description="A stable code: no_file, upload_too_large, too_many_files, too_many_pixels, "
                       "not_an_image, corrupt_image, analysis_failed, busy, bad_request, not_found")  # fmt: skip
    detail: str = Field(description="What is wrong, naming the uploaded file where there is one.")


def _error_response(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


class BodyLimit:
    """ASGI middleware: refuse a request body over ``max_bytes`` from its Content-Length before reading it, and
    count a body without one while it is read, so no request body larger than the limit is ever held."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> ApiError:
        return ApiError(
            413,
            "upload_too_large",
            f"upload too large: the request body exceeds the limit of {_mib(self.max_bytes)} "
            "(gan-face serve --max-upload-mb); send fewer or smaller files",
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            error = self._too_large()
            await _error_response(error.status_code, error.code, error.detail)(scope, receive, send)
            return
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise self._too_large()  # an HTTPException: FastAPI's body parsing lets it through
            return message

        await self.app(scope, counted, send)


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


def page_error(error: GanFaceError, limits: "Limits") -> str:
    """``error`` as the page's card says it. The people at the page have no terminal, so where the scan's message
    tells how to raise a limit from the command line, the page says instead that the server refuses it; the
    row, the CSV and the JSONL keep the scan's message."""
    if isinstance(error, ImageTooLargeError):
        most = "" if limits.max_pixels is None else f" ({limits.max_pixels:,} at most)"
        return f"{error.source}: more pixels than this server accepts{most}; it may be a decompression bomb"
    return safe_text(str(error))


# ----------------------------------------------------------------------------------------------------- batcher


@dataclass
class Upload:
    """One uploaded image, as the request gave it: the file name (its row's ``path``) and the bytes."""

    name: str
    data: bytes
    thumbnail: bool = False  # the page shows a thumbnail; the API does not need one


@dataclass
class Answer:
    result: Union[Verdict, GanFaceError]
    thumbnail: Optional[str] = None  # base64 JPEG, as the HTML report embeds it


@dataclass
class _Job:
    upload: Upload
    future: "Future[Answer]" = field(default_factory=Future)


class _NamedBytes(io.BytesIO):
    """Bytes with a file name, so that a load error names the upload (``io.describe_source`` reads ``name``)."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name


class Batcher:
    """Scores uploads from many requests together: ``detector.threads`` threads, each taking what waits (at most
    ``batch_size`` images, shared with the other idle threads) and taking it from bytes to verdicts through
    the detector's pipeline (:meth:`Detector.score_batch`), as each of ``gan-face scan``'s threads takes a whole
    batch. So one thread
    decodes while another runs the networks, and a request is answered as soon as its own batch is done.
    :meth:`submit` refuses (``ApiError`` 503) when ``max_queue`` images already wait."""

    def __init__(
        self,
        detector: Detector,
        *,
        batch_size: int = SERVE_BATCH_SIZE,
        max_queue: int = 512,
        gather_s: float = GATHER_S,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.detector = detector
        self.batch_size = batch_size
        self.max_queue = max_queue
        self.gather_s = gather_s
        self._queue: "queue.SimpleQueue[Optional[_Job]]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._waiting = 0
        self._idle = 0  # threads waiting for work: what waits is shared among them
        self._closed = False
        self._threads = [
            threading.Thread(target=self._run, name=f"gan-face-batcher-{i}", daemon=True)
            for i in range(detector.threads)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def waiting(self) -> int:
        """Images submitted and not yet answered."""
        return self._waiting

    def submit(self, uploads: Sequence[Upload]) -> list["Future[Answer]"]:
        with self._lock:
            if self._closed:
                raise ApiError(503, "busy", "the server is shutting down")
            if self._waiting + len(uploads) > self.max_queue:
                raise ApiError(
                    503, "busy", f"{self._waiting} images are waiting to be scored (limit {self.max_queue}); retry"
                )
            self._waiting += len(uploads)
        jobs = [_Job(upload) for upload in uploads]
        for job in jobs:
            self._queue.put(job)
        return [job.future for job in jobs]

    async def score(self, uploads: Sequence[Upload]) -> list[Answer]:
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in self.submit(uploads))))

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking work; the images already taken are answered (each thread finishes its batch)."""
        with self._lock:
            self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)

    def _take(self) -> Optional[list[_Job]]:
        """The next batch (``None`` once closed): one job, waiting for it, then at most ``batch_size`` in all.
        Jobs already waiting are split evenly with the other idle threads; a job that came alone waits up to
        ``gather_s`` for the ones right behind it (requests sent together arrive one by one), so that a burst
        of requests is not scored one image per batch."""
        with self._lock:
            self._idle += 1
        job = self._queue.get()
        with self._lock:
            sharing = max(1, self._idle)
            self._idle -= 1
        if job is None:
            return None
        jobs = [job]
        already = self._queue.qsize()
        most = min(self.batch_size, -(-(1 + already) // sharing)) if already else self.batch_size
        deadline = time.monotonic() + self.gather_s
        while len(jobs) < most:
            try:
                if already:
                    job = self._queue.get_nowait()
                else:
                    job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # this thread's stop: finish this batch first
                break
            jobs.append(job)
        return jobs

    def _run(self) -> None:
        while (jobs := self._take()) is not None:
            self._score(jobs)

    def _score(self, jobs: list[_Job]) -> None:
        answers: list[Answer] = []
        failure: Optional[BaseException] = None
        try:
            for scored in self.detector.score_batch(jobs, source=self._source):
                thumbnail = None
                if scored.item.upload.thumbnail and scored.image is not None:
                    thumbnail = jpeg_b64(make_thumbnail(scored.image))
                answers.append(Answer(scored.result, thumbnail))
        except BaseException as exc:  # noqa: BLE001  no request may wait for ever
            log.exception("scoring a batch of %d uploads failed", len(jobs))
            failure = exc
        with self._lock:  # before the answers: a client that has its answer sees it no longer waiting
            self._waiting -= len(jobs)
        for index, job in enumerate(jobs):
            if failure is None:
                job.future.set_result(answers[index])
            else:
                job.future.set_exception(failure)

    @staticmethod
    def _source(job: _Job) -> _NamedBytes:
        """What the pipeline decodes for an upload: its bytes, named, so that an error names the upload."""
        data, job.upload.data = job.upload.data, b""  # once decoded (or refused), the bytes are not needed
        return _NamedBytes(data, job.upload.name)


def _row_model(evidence_names: Sequence[str]) -> type[BaseModel]:
    """The row schema of this detector: the keys and types of ``gan-face scan``'s JSONL rows."""

    class Face(BaseModel):
        box: list[float] = Field(description="x0, y0, x1, y1 in image pixels")
        confidence: float
        landmarks: dict[str, list[float]] = Field(
            description="left_eye, right_eye, nose, mouth_left, mouth_right: (x, y) in pixels, left/right as the "
            "viewer sees them"
        )

    checks = {
        f"check_{name}": (Optional[float], Field(None, description=f"the {name} evidence's score, 0..1"))
        for name in evidence_names
    }
    return create_model(
        "Row",
        __doc__="One image's verdict: the same keys and values as a row of `gan-face scan -o report.jsonl`; an "
        "unreadable file's row has `error` set and only the flat columns.",
        path=(str, Field(description="the uploaded file's name")),
        likelihood=(Optional[float], Field(None, description="0..1, calibrated at even odds; null: no evidence")),
        synthetic=(Optional[bool], Field(None, description="likelihood >= threshold")),
        verdict=(
            Optional[str],
            Field(None, description="the answer in words: likely generated, can't tell, likely a camera photo"),
        ),
        threshold=(Optional[float], None),
        status=(Optional[str], Field(None, description="ok, no_face, multiple_faces or low_quality")),
        error=(Optional[str], Field(None, description="why the file could not be scored")),
        reason=(Optional[str], Field(None, description="the answer and the evidence that moved it, in words")),
        **checks,
        not_computed=(Optional[str], Field(None, description="checks skipped for this image, space-separated")),
        image_size=(Optional[list[int]], Field(None, description="width, height")),
        face=(Optional[Face], None),
        explanations=(Optional[dict[str, str]], Field(None, description="each evidence's one-line explanation")),
        decided_by=(Optional[str], Field(None, description="the evidence that carried the decision")),
        weighed=(Optional[list[str]], Field(None, description="the evidence the likelihood is made of")),
    )


class Health(BaseModel):
    status: str = "ok"
    model: str
    waiting: int = Field(description="images submitted and not yet answered")


class LimitsInfo(BaseModel):
    max_upload_bytes: int
    max_files: int
    max_pixels: Optional[int]
    max_queue: int


class ModelInfo(BaseModel):
    name: str
    description: str
    threshold: float = Field(description="the operating point in use (flag when likelihood >= threshold)")
    card_threshold: float = Field(description="the threshold stored with the model")
    evidence: list[str] = Field(description="the evidence every row scores, as its check_<name> columns")
    evaluation: dict[str, Any] = Field(description="the model card's measured accuracy, summarised")
    limits: LimitsInfo
    version: str


def evaluation_summary(evaluation: Any) -> dict[str, Any]:
    """The card's evaluation, short: per condition, the pooled figures and each generator's, at the card's
    threshold (full tables in the card and ``models/README.md``). A card whose evaluation has another shape (a
    fine-tuned model's before/after) is passed through."""
    if not isinstance(evaluation, dict):
        return {}
    conditions = evaluation.get("conditions")
    if not isinstance(conditions, dict):
        return dict(evaluation)
    keys = ("n_real", "n_fake", "auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "fpr_at_threshold")

    def short(metrics: Any) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in (metrics or {}).items() if k in keys}

    summary: dict[str, Any] = {k: evaluation[k] for k in ("protocol", "data", "n_images") if k in evaluation}
    summary["conditions"] = {
        name: {
            "all": short((entry.get("by_source") or {}).get("all")),
            "by_generator": {g: short(m) for g, m in (entry.get("by_generator") or {}).items()},
        }
        for name, entry in conditions.items()
        if isinstance(entry, dict)
    }
    return summary


_UPLOAD_ERRORS = {
    400: {"model": ErrorBody, "description": "no_file: no `file` or `files` field; bad_request"},
    413: {"model": ErrorBody, "description": "upload_too_large, too_many_files, or too_many_pixels (`file`)"},
    415: {"model": ErrorBody, "description": "not_an_image (`file`): the content is in no image format"},
    422: {"model": ErrorBody, "description": "corrupt_image (`file`): damaged, truncated or empty"},
    500: {"model": ErrorBody, "description": "analysis_failed (`file`)"},
    503: {"model": ErrorBody, "description": "busy: too many images waiting; retry"},
}

FileField = Annotated[
    Optional[UploadFile], File(description="One image: its row, or a 4xx error naming the problem.")
]
FilesField = Annotated[
    Optional[list[UploadFile]],
    File(description="Several images: their rows in order; an unreadable one is a row with its `error`."),
]


def create_app(detector: Detector, limits: Limits = Limits(), *, batch_size: int = SERVE_BATCH_SIZE) -> FastAPI:
    """The service around ``detector`` (built once, shared by every request). Its batcher thread starts here and
    stops when the app shuts down (uvicorn, or leaving a ``TestClient`` context)."""
    evidence_names = list(detector.evidence_names)
    columns = columns_for(evidence_names)
    batcher = Batcher(detector, batch_size=batch_size, max_queue=limits.max_queue)
    row_model = _row_model(evidence_names)
    score_model = create_model("ScoreResponse", rows=(list[row_model], ...))  # type: ignore[valid-type]
    card_item = create_model(
        "Card",
        row=(row_model, ...),
        card=(str, Field(description="the verdict card as the HTML report shows it (HTML)")),
        csv=(str, Field(description="the row as a line of `gan-face scan -o report.csv`")),
        jsonl=(str, Field(description="the row as a line of `gan-face scan -o report.jsonl`")),
    )
    cards_model = create_model("CardsResponse", items=(list[card_item], ...), csv_header=(str, ...))  # type: ignore

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await asyncio.to_thread(batcher.close)

    app = FastAPI(
        title="gan-face",
        version=__version__,
        description="Tell whether face profile photos were made by a generator (GAN, diffusion), with the "
        f"evidence. Model {detector.card.name}, threshold {detector.threshold:.4f}. Rows have the keys and values "
        "of `gan-face scan`'s JSONL rows. Errors are JSON `{error, detail}`.",
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.detector = detector
    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_bytes)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = getattr(exc, "code", None) or {404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "bad_request"
        )
        return _error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_form(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"field {'.'.join(str(p) for p in e.get('loc', ())[1:]) or '?'}: {e.get('msg')}" for e in exc.errors()
        )
        return _error_response(400, "bad_request", f"malformed form: {problems}")

    async def read_uploads(
        request: Request, file: Optional[UploadFile], files: Optional[list[UploadFile]], *, thumbnails: bool
    ) -> tuple[list[Upload], bool]:
        """The uploads of a request, read into memory, and whether it used the single ``file`` field."""
        given = ([file] if file is not None else []) + list(files or [])
        try:
            if not given:
                raise ApiError(
                    400,
                    "no_file",
                    "no file: send the image as the multipart form field 'file' (one) or 'files' (several), "
                    "e.g. curl -F file=@avatar.jpg",
                )
            if file is not None and (files or len((await request.form()).getlist("file")) > 1):
                raise ApiError(400, "bad_request", "the field 'file' takes one image; send several as 'files'")
            if len(given) > limits.max_files:
                raise ApiError(
                    413,
                    "too_many_files",
                    f"too many files: {len(given)} in one request, the limit is {limits.max_files} "
                    "(gan-face serve --max-files)",
                )
            uploads = [
                Upload(safe_text(upload.filename or f"upload-{i}"), await upload.read(), thumbnails)
                for i, upload in enumerate(given)
            ]
        finally:
            for upload in given:
                await upload.close()  # a spooled temporary file is deleted when closed
        return uploads, file is not None

    def row_of(upload: Upload, scored: Answer) -> dict[str, Any]:
        if isinstance(scored.result, GanFaceError):
            return error_row(upload.name, scored.result, evidence_names)
        return verdict_row(upload.name, scored.result, evidence_names)

    @app.get("/", response_class=HTMLResponse, tags=["page"], summary="The page: drop avatars, see the evidence")
    async def page() -> HTMLResponse:
        html = (
            environment()
            .get_template("serve.html.j2")
            .render(
                model=detector.card.name,
                threshold=detector.threshold,
                version=__version__,
                csv_header=csv_header(columns),
                max_upload_bytes=limits.max_upload_bytes,
                max_files=limits.max_files,
            )
        )
        return HTMLResponse(html)

    upload_route = functools.partial(app.post, responses=_UPLOAD_ERRORS)  # both routes take uploads

    @upload_route("/v1/score", response_model=score_model, tags=["api"], summary="Score one image or several")
    async def score(request: Request, file: FileField = None, files: FilesField = None) -> Response:
        """Multipart upload. `file`: one image, answered with its row or a 4xx error that names the problem.
        `files`: several images, answered with their rows in order, an unreadable file as a row with `error`
        set (as in a scan). Each row has the keys and values of `gan-face scan -o report.jsonl`'s rows."""
        uploads, single = await read_uploads(request, file, files, thumbnails=False)
        results = await batcher.score(uploads)
        if single and isinstance(results[0].result, GanFaceError):
            raise api_error(results[0].result)
        lines = [jsonl_line(row_of(u, s), columns).rstrip("\n") for u, s in zip(uploads, results)]
        return Response('{"rows": [' + ", ".join(lines) + "]}", media_type="application/json")

    @upload_route("/v1/cards", response_model=cards_model, tags=["page"], summary="Rows with their verdict cards")
    async def cards(request: Request, files: FilesField = None) -> JSONResponse:
        """As `/v1/score` with `files`, each row with its verdict card (HTML, with the thumbnail, landmarks and
        StyleGAN eye template drawn) and its CSV and JSONL report lines."""
        uploads, _ = await read_uploads(request, None, files, thumbnails=True)
        results = await batcher.score(uploads)
        items = []
        for index, (upload, scored) in enumerate(zip(uploads, results)):
            row = row_of(upload, scored)
            shown = {**row, "thumbnail": scored.thumbnail}
            if isinstance(scored.result, GanFaceError):
                shown["error"] = page_error(scored.result, limits)
            card = render_card(shown, index, evidence_names)
            items.append(
                {"row": row, "card": card, "csv": csv_line(row, columns), "jsonl": jsonl_line(row, columns)}
            )
        return JSONResponse({"items": items, "csv_header": csv_header(columns)})

    @app.get("/healthz", response_model=Health, tags=["api"], summary="Is the server up")
    async def healthz() -> Health:
        return Health(model=detector.card.name, waiting=batcher.waiting)

    @app.get(
        "/v1/model", response_model=ModelInfo, tags=["api"], summary="The model card: name, threshold, accuracy"
    )
    async def model() -> ModelInfo:
        return ModelInfo(
            name=detector.card.name,
            description=detector.card.description,
            threshold=detector.threshold,
            card_threshold=detector.card.threshold,
            evidence=evidence_names,
            evaluation=evaluation_summary(detector.card.sections.get("evaluation")),
            limits=LimitsInfo(**vars(limits)),
            version=__version__,
        )

    return app


# -------------------------------------------------------------------------------------------------- running it


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (0: a free port), or ``OSError`` saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def serve(app: FastAPI, sock: socket.socket, *, log_level: str = "info") -> None:
    """Run ``app`` with uvicorn on an already bound socket until interrupted (Ctrl-C or SIGTERM); return once it
    has shut down (the requests in flight answered, the batcher stopped)."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=True, timeout_graceful_shutdown=10)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down cleanly, then raises the signal it caught again: a normal stop
        pass
