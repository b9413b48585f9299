"""Scanning files and folders into a report: discovery, resumable and crash-safe output, error rows.

This is the layer that knows about files and folders; the Detector below it only sees images, the CLI above it
only parses arguments and prints.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Optional, Sequence

from ..detector import DEFAULT_BATCH_SIZE, Detector
from ..errors import GanFaceError, ImageNotFoundError, OutputExistsError
from ..files import InputFile
from ..result import CANT_TELL
from .account_network import AccountNetworkView
from .report import (
    CsvRowWriter,
    JsonlRowWriter,
    columns_for,
    error_row,
    reorder_rows,
    resumable_rows,
    verdict_row,
)
from .report_html import jpeg_b64, make_thumbnail, render_html, thumbnail_of

log = logging.getLogger(__name__)

FORMATS = ("csv", "jsonl", "html")


def format_for(output: Optional[str], requested: Optional[str]) -> str:
    """The report format: as requested, else from the output's suffix; CSV on stdout. An output whose suffix
    names no format is refused (``ValueError``) rather than silently written as CSV."""
    if requested:
        return requested
    if not output:
        return "csv"
    suffix = Path(output).suffix.lower().lstrip(".")
    if suffix in ("jsonl", "ndjson", "json"):
        return "jsonl"
    if suffix in ("htm", "html"):
        return "html"
    if suffix in FORMATS:
        return suffix
    raise ValueError(
        f"{output}: cannot tell the report format from its name; use .csv, .jsonl or .html, or --format"
    )


def check_output(output: str, *, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse, before any work, a report that could not be written: a missing or unwritable folder, a folder
    in the way, or (without ``resume``/``overwrite``) an existing report (``ValueError``/``OutputExistsError``)."""
    path = Path(output)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ValueError(f"{output}: is a folder; give a report file name")
    if not folder.is_dir():
        raise ValueError(f"{output}: its folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{output}: its folder {folder} is not writable")
    if not (resume or overwrite):
        ReportFile.refuse_existing(path)


@dataclass
class ScanSummary:
    """Counts over the whole report, rows kept from an interrupted run (``skipped``) included."""

    scored: int = 0
    failed: int = 0
    skipped: int = 0  # of the rows above, those already in the report when resuming (not scored again)
    flagged: int = 0
    cant_tell: int = 0  # answered "can't tell": a likelihood in the band below the threshold
    statuses: dict[str, int] = field(default_factory=dict)

    def add(self, status: str, flagged: bool, answer: Optional[str] = None) -> None:
        self.scored += 1
        self.flagged += flagged
        self.cant_tell += answer == CANT_TELL and status != "no_face"
        self.statuses[status] = self.statuses.get(status, 0) + 1


class ScanInterrupted(KeyboardInterrupt):
    """Ctrl-C during a scan: ``rows`` rows are in the report's ``.partial`` (``partial``; ``None`` when the rows
    went to stdout), those of every image scored before the interruption; ``--resume`` finishes it."""

    def __init__(self, rows: int, partial: Optional[Path]) -> None:
        super().__init__(rows, partial)
        self.rows = rows
        self.partial = partial


class ReportFile:
    """A report written crash-safely: rows go to ``<out>.partial`` and it becomes ``<out>`` when the scan ends.

    An interrupted scan leaves ``<out>`` untouched (or absent) and a ``.partial`` of whole rows, which
    ``resume=True`` continues: rows that hold an error are dropped so those files are tried again. An existing
    ``<out>`` or ``.partial`` is never replaced unless ``overwrite=True``, and the ``.partial`` is locked so two
    scans cannot write one report. An HTML report collects JSON-lines rows (with thumbnails) in its
    ``.partial`` and is rendered from them at the end.
    """

    def __init__(self, output: str, fmt: str, columns: Sequence[str], *, resume: bool, overwrite: bool) -> None:
        self.output = Path(output)
        self.fmt = fmt
        self.partial = self.output.with_name(self.output.name + ".partial")
        rows_format = "jsonl" if fmt == "html" else fmt
        self.done: set[str] = set()
        if not (resume or overwrite):
            self.refuse_existing(self.output)
        if resume and not self.partial.exists() and self.output.exists():
            if fmt == "html":
                raise OutputExistsError(
                    f"{self.output}: a finished HTML report cannot be resumed; use --overwrite"
                )
            shutil.copyfile(self.output, self.partial)
        self.handle: IO[str] = open(self.partial, "a+", newline="", encoding="utf-8", errors="backslashreplace")
        try:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.close()
            raise OutputExistsError(f"{self.partial}: another gan-face scan is writing this report") from None
        kept: list[dict] = []
        self.resumed = resume
        if resume:
            self.handle.seek(0)
            try:
                kept = resumable_rows(self.handle.read(), rows_format, columns)
            except ValueError as exc:
                self.handle.close()
                raise OutputExistsError(f"{self.partial}: {exc}") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.writer = (
            CsvRowWriter(self.handle, columns) if rows_format == "csv" else JsonlRowWriter(self.handle, columns)
        )
        self.kept = kept
        for row in kept:
            self.writer.write(row)
            self.done.add(row["path"])
        self.handle.flush()

    @staticmethod
    def refuse_existing(output: Path) -> None:
        partial = output.with_name(output.name + ".partial")
        if output.exists():
            raise OutputExistsError(
                f"{output}: already exists; use --resume to add the files it lacks, or --overwrite"
            )
        if partial.exists():
            raise OutputExistsError(
                f"{partial}: an interrupted scan left it; use --resume to finish it, or --overwrite"
            )

    def finish(
        self, render: Optional[Callable[[Path, Path], None]] = None, order: Optional[Sequence[str]] = None
    ) -> None:
        """Make the report final. ``order`` (the rows' paths in input order) puts the rows of a resumed scan,
        kept and new, back in input order first."""
        self.handle.flush()
        os.fsync(self.handle.fileno())
        if render is None:
            if self.resumed and order is not None:
                reorder_rows(self.partial, "csv" if self.fmt == "csv" else "jsonl", order)
            os.replace(self.partial, self.output)
        else:  # the HTML page is rendered from the rows, atomically, and only then are the rows let go
            render(self.partial, self.output)
            self.partial.unlink()
        self.handle.close()  # releases the lock last

    def abandon(self) -> None:
        self.handle.flush()
        self.handle.close()


def _source(item: InputFile) -> str:
    """What the pipeline decodes for a discovered file: its path, or the error discovery already found."""
    if item.problem is not None:
        raise ImageNotFoundError(item.display, item.problem)
    return item.path


def run_scan(
    detector: Detector,
    files: Sequence[InputFile],
    *,
    output: Optional[str],
    fmt: str,
    resume: bool = False,
    overwrite: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    network: Optional[AccountNetworkView] = None,
) -> ScanSummary:
    """Score ``files`` with ``detector`` and write one row per file, in input order.

    ``network``, when given, is fed every scored image (for the network view of ``--summary``); an HTML report
    builds one for its page if none is given. Files are decoded and scored by the detector's threads
    (:meth:`Detector.score_stream`); each row is written and flushed as soon as its batch is scored.
    """
    if fmt == "html" and network is None:
        network = AccountNetworkView()
    evidence_names = detector.evidence_names
    columns = columns_for(evidence_names)
    summary = ScanSummary()
    report = None
    if output:
        report = ReportFile(output, fmt, columns, resume=resume, overwrite=overwrite)
        writer, handle = report.writer, report.handle
    else:
        if fmt == "html":
            raise ValueError("an HTML report needs an output file")
        handle = sys.stdout
        writer = CsvRowWriter(handle, columns) if fmt == "csv" else JsonlRowWriter(handle, columns)
    todo = [f for f in files if report is None or f.display not in report.done]
    if report is not None:
        for row in report.kept:  # the summary and the network view speak of the whole report
            summary.skipped += 1
            summary.add(str(row.get("status")), row.get("synthetic") in (True, "true"), row.get("verdict"))
            if network is not None:
                network.add_row(row, thumbnail_of(row))

    from tqdm import tqdm

    bar = tqdm(total=len(todo), disable=not progress, unit="img", file=sys.stderr, dynamic_ncols=True)
    written = 0
    try:
        for scored in detector.score_stream(todo, source=_source, batch_size=batch_size):
            item, result = scored.item, scored.result
            if isinstance(result, GanFaceError):
                summary.failed += 1
                row = error_row(item.display, result, evidence_names)
            else:
                summary.add(result.status, result.synthetic, result.answer)
                row = verdict_row(item.display, result, evidence_names)
                if network is not None:
                    thumbnail = make_thumbnail(scored.image)  # one small copy serves the page and the mean faces
                    network.add(item.display, result, thumbnail)
                    if fmt == "html":
                        row["thumbnail"] = jpeg_b64(thumbnail)
            writer.write(row)
            handle.flush()
            written += 1
            bar.update(1)
    except KeyboardInterrupt:
        if report is not None:
            report.abandon()
        raise ScanInterrupted(len(report.kept) + written if report else written, report and report.partial)
    except BaseException:
        if report is not None:
            report.abandon()
        raise
    finally:
        bar.close()
    if report is not None:
        render = None
        if fmt == "html":

            def render(rows: Path, out: Path) -> None:
                render_html(
                    rows,
                    out,
                    threshold=detector.threshold,
                    model=detector.card.name,
                    evidence_names=list(evidence_names),
                    network=network,
                )

        report.finish(render, order=[f.display for f in files])
    else:
        handle.flush()
    return summary
