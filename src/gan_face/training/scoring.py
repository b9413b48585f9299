"""Scoring labelled samples with the full pipeline under each condition, and saving those rows."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Sequence

import numpy as np

from ..detector import DEFAULT_BATCH_SIZE, Detector
from ..io import load_image
from .conditions import apply_condition
from .datasets import Sample


def score_samples(
    detector: Detector,
    samples: Sequence[Sample],
    conditions: Sequence[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> list[dict]:
    """Run ``detector`` on every sample under every condition (the full pipeline: detection, CNN, checks).

    Returns one row per (sample, condition): the sample, the condition, the fused likelihood, each check's score
    and the status. The condition of sample ``i`` is seeded with ``i``, so every model sees the same images.
    """
    jobs = [(i, c) for c in conditions for i in range(len(samples))]
    return score_jobs(detector, samples, jobs, batch_size=batch_size, progress=progress)


def score_jobs(
    detector: Detector,
    samples: Sequence[Sample],
    jobs: Sequence[tuple[int, str]],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> list[dict]:
    """:func:`score_samples` for chosen ``(sample index, condition)`` pairs: the condition of ``samples[i]`` is
    seeded with ``i``, so a subset of a data set gets the same conditioned images as the whole (and as the
    crop and feature caches, which seed the same way). Rows also hold the sample's ``index``. Batches run
    through the detector's pipeline, on its threads."""
    from tqdm import tqdm

    def conditioned(job: tuple[int, str]) -> np.ndarray:
        i, condition = job
        return apply_condition(load_image(samples[i].path), condition, seed=i)

    scored = detector.score_stream(jobs, source=conditioned, batch_size=batch_size)
    rows: list[dict] = []
    for item in tqdm(scored, total=len(jobs), desc="scoring", unit="img", disable=not progress):
        if isinstance(item.result, Exception):  # the data sets are checked before scoring: a bug, not a file
            raise item.result
        (i, condition), verdict = item.item, item.result
        rows.append(_row(samples[i], i, condition, verdict))
    return rows


def _row(sample: Sample, i: int, condition: str, verdict) -> dict:
    return {
        "sample": sample,
        "index": i,
        "condition": condition,
        "likelihood": verdict.likelihood,
        "status": verdict.status,
        "scores": {name: result.score for name, result in verdict.evidence.items()},
    }


def row_likelihoods(rows: Sequence[dict]) -> np.ndarray:
    """The rows' likelihoods for ranking metrics. An image without one (nothing the model weighs was measured,
    e.g. no face) is never flagged, so it ranks as 0, below every scored image."""
    return np.array([0.0 if r["likelihood"] is None else r["likelihood"] for r in rows], dtype=np.float64)


def save_rows(rows: Sequence[dict], path) -> None:
    """Scored rows as JSON lines (sample fields, condition, likelihood, status, every check's score)."""
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({**row, "sample": asdict(row["sample"])}) + "\n")


def load_rows(path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            row["sample"] = Sample(**row["sample"])
            rows.append(row)
    return rows
