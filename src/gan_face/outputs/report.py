"""Report rows and their writers: CSV and JSONL.

A row is one input file: ``path``, ``likelihood``, ``synthetic``, ``verdict`` (the answer in words: likely
generated, can't tell, likely a camera photo), ``threshold``, ``status``, ``error``, ``reason``
(the verdict's own :attr:`~gan_face.result.Verdict.reason`: the evidence that weighed most), ``check_<name>`` for
each piece of evidence's score (the learnt views' and the checks': the report schema keeps the ``check_`` prefix
for all of them) and ``not_computed`` (the checks skipped for this image, space-separated; see
``Detector(explain="auto")``). JSONL rows also carry the face (box and landmarks) and each piece of evidence's
explanation. ``likelihood`` is empty/null when
``error`` is set, and when nothing the model weighs could be measured (``status`` says why: ``no_face``).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import IO, Any, Iterable, Mapping, Sequence

from ..files import safe_text
from ..result import Verdict

BASE_COLUMNS = ("path", "likelihood", "synthetic", "verdict", "threshold", "status", "error", "reason")


def columns_for(evidence_names: Iterable[str]) -> tuple[str, ...]:
    return BASE_COLUMNS + tuple(f"check_{name}" for name in evidence_names) + ("not_computed",)


def verdict_row(path: str, verdict: Verdict, evidence_names: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "path": path,
        "likelihood": None if verdict.likelihood is None else round(verdict.likelihood, 6),
        "synthetic": verdict.synthetic,
        "verdict": verdict.answer,
        "threshold": round(verdict.threshold, 6),
        "status": verdict.status,
        "error": None,
        "reason": verdict.reason,
    }
    for name in evidence_names:
        result = verdict.evidence.get(name)
        score = None if result is None else result.score
        row[f"check_{name}"] = None if score is None else round(score, 6)
    row["not_computed"] = " ".join(verdict.not_computed)  # empty: every check was computed
    row["image_size"] = list(verdict.image_size)
    row["face"] = None if verdict.face is None else verdict.face.to_dict()
    row["explanations"] = {name: result.explanation for name, result in verdict.evidence.items()}
    row["decided_by"] = verdict.decided_by
    row["weighed"] = [name for name in verdict.contributions if name in verdict.evidence]
    return row


def error_row(path: str, error: BaseException, evidence_names: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(columns_for(evidence_names))
    row.update(path=path, error=safe_text(str(error)))
    return row


def csv_line(row: Mapping[str, Any], columns: Sequence[str]) -> str:
    """One CSV line of ``row``'s flat columns, as a report holds it (empty cells for ``None``)."""
    return _csv_record(["" if row.get(c) in (None, "") else _csv_value(row.get(c)) for c in columns])


def csv_header(columns: Sequence[str]) -> str:
    return _csv_record(columns)


def jsonl_line(row: Mapping[str, Any], columns: Sequence[str]) -> str:
    """One JSON-lines line: the columns first, in order, then the nested fields (face, explanations, ...)."""
    ordered = {c: row.get(c) for c in columns}
    ordered.update({k: v for k, v in row.items() if k not in ordered})
    return json.dumps(ordered, ensure_ascii=False) + "\n"


def _csv_record(values: Sequence[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


class CsvRowWriter:
    """Writes the flat columns; nested fields (face, explanations) are JSONL-only."""

    def __init__(self, handle: IO[str], columns: Sequence[str], *, write_header: bool = True) -> None:
        self._handle = handle
        self._columns = tuple(columns)
        if write_header:
            self._handle.write(csv_header(self._columns))

    def write(self, row: Mapping[str, Any]) -> None:
        # one write() per complete line, so an interrupted scan leaves whole rows only
        self._handle.write(csv_line(row, self._columns))


class JsonlRowWriter:
    def __init__(self, handle: IO[str], columns: Sequence[str]) -> None:
        self._handle = handle
        self._columns = tuple(columns)

    def write(self, row: Mapping[str, Any]) -> None:
        self._handle.write(jsonl_line(row, self._columns))


def _csv_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def resumable_rows(text: str, fmt: str, columns: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of an interrupted report worth keeping: whole rows without an error.

    A last line cut short by the interruption is dropped; so are rows with an error, so that their files are
    tried again. A CSV written with other columns cannot be continued (``ValueError``).
    """
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    kept: list[dict[str, Any]] = []
    if fmt == "csv":
        records = list(csv.reader(io.StringIO(text)))
        if records:
            header = records[0]
            if tuple(header) != tuple(columns):
                raise ValueError("its columns differ from this scan's, so it cannot be resumed")
            for record in records[1:]:
                row = dict(zip(header, record))
                if len(record) == len(header) and not row.get("error"):
                    kept.append(row)
    else:
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and row.get("path") and not row.get("error"):
                kept.append(row)
    return kept


def reorder_rows(path: Path, fmt: str, order: Sequence[str]) -> None:
    """Rewrite a report's rows in input order (``order``: the paths, in order), atomically; rows of paths not in
    ``order`` (a file gone since the first run) keep their place after the others. Used when a resumed scan
    appended files that come before rows it kept."""
    rank = {name: i for i, name in enumerate(order)}
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    if fmt == "csv":
        records = list(csv.reader(io.StringIO(text)))
        header, body = records[:1], records[1:]
        key = header[0].index("path") if header else 0
        body.sort(key=lambda record: rank.get(record[key], len(rank)))
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(header + body)
        ordered = buffer.getvalue()
    else:
        lines = [line for line in text.splitlines() if line.strip()]
        lines.sort(key=lambda line: rank.get(json.loads(line).get("path"), len(rank)))
        ordered = "".join(line + "\n" for line in lines)
    staging = path.with_name(path.name + ".ordering")
    staging.write_text(ordered, encoding="utf-8", errors="surrogateescape")
    os.replace(staging, path)
