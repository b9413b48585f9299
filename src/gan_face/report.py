"""Report rows and their writers: CSV and JSONL.

A row is one input file: ``path``, ``likelihood``, ``synthetic``, ``threshold``, ``status``, ``error``, ``reason``
(the explanation of the evidence that weighed most) and ``check_<name>`` for every check's score. JSONL rows
also carry the face (box and landmarks) and each check's explanation. ``likelihood`` is empty/null only when
``error`` is set.
"""

from __future__ import annotations

import csv
import io
import json
from typing import IO, Any, Iterable, Mapping, Optional, Sequence

from .result import Verdict

BASE_COLUMNS = ("path", "likelihood", "synthetic", "threshold", "status", "error", "reason")


def columns_for(check_names: Iterable[str]) -> tuple[str, ...]:
    return BASE_COLUMNS + tuple(f"check_{name}" for name in check_names)


def main_reason(verdict: Verdict) -> str:
    """The explanation of the evidence that pushed hardest in the direction of the decision."""
    contributions = {k: v for k, v in verdict.contributions.items() if k in verdict.checks}
    if not contributions:
        first = next(iter(verdict.checks.values()), None)
        return first.explanation if first else ""
    sign = 1.0 if verdict.synthetic else -1.0
    name = max(contributions, key=lambda k: sign * contributions[k])
    return verdict.checks[name].explanation


def verdict_row(path: str, verdict: Verdict, check_names: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "path": path,
        "likelihood": round(verdict.likelihood, 6),
        "synthetic": verdict.synthetic,
        "threshold": round(verdict.threshold, 6),
        "status": verdict.status,
        "error": None,
        "reason": main_reason(verdict),
    }
    for name in check_names:
        result = verdict.checks.get(name)
        score = None if result is None else result.score
        row[f"check_{name}"] = None if score is None else round(score, 6)
    row["image_size"] = list(verdict.image_size)
    row["face"] = None if verdict.face is None else verdict.face.to_dict()
    row["explanations"] = {name: result.explanation for name, result in verdict.checks.items()}
    return row


def error_row(path: str, error: BaseException, check_names: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(columns_for(check_names))
    row.update(path=path, error=str(error))
    return row


class CsvRowWriter:
    """Writes the flat columns; nested fields (face, explanations) are JSONL-only."""

    def __init__(self, handle: IO[str], columns: Sequence[str], *, write_header: bool = True) -> None:
        self._handle = handle
        self._columns = tuple(columns)
        if write_header:
            self._write_line(self._columns)

    def write(self, row: Mapping[str, Any]) -> None:
        self._write_line(["" if row.get(c) is None else _csv_value(row.get(c)) for c in self._columns])

    def _write_line(self, values: Sequence[Any]) -> None:
        # one write() per complete line, so an interrupted scan leaves whole rows only
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(values)
        self._handle.write(buffer.getvalue())


class JsonlRowWriter:
    def __init__(self, handle: IO[str], columns: Sequence[str]) -> None:
        self._handle = handle
        self._columns = tuple(columns)

    def write(self, row: Mapping[str, Any]) -> None:
        ordered = {c: row.get(c) for c in self._columns}
        ordered.update({k: v for k, v in row.items() if k not in ordered})
        self._handle.write(json.dumps(ordered, ensure_ascii=False) + "\n")


def _csv_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def read_done_paths(handle: IO[str], fmt: str) -> tuple[set[str], Optional[list[str]]]:
    """Paths already in an existing CSV/JSONL report, and the CSV header (for resuming a scan)."""
    done: set[str] = set()
    header: Optional[list[str]] = None
    if fmt == "csv":
        reader = csv.reader(handle)
        header = next(reader, None)
        if header:
            index = header.index("path")
            done = {row[index] for row in reader if len(row) == len(header)}
    else:
        for line in handle:
            try:
                done.add(json.loads(line)["path"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return done, header
