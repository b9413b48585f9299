"""Scoring millions of images on a Ray cluster with Ray Data: one Detector per worker, batches of file paths.

Needs ``pip install "gan-face[ray]"``. Each actor builds its Detector once (the model is loaded once per
worker, not per batch) and scores the batches it is handed; rows carry the same columns as ``gan-face scan``.

    import ray
    from gan_face.outputs.ray_data import score_folder

    ray.init()                                   # or ray.init(address="auto") on a cluster
    ds = score_folder("s3-mounted/avatars", recursive=True, actors=16)
    ds.write_parquet("scores/")                  # or ds.to_pandas(), ds.iter_rows(), ...
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Optional, Sequence

import numpy as np

from ..detector import DEFAULT_BATCH_SIZE
from ..errors import GanFaceError
from ..files import collect_files
from .report import columns_for, error_row, verdict_row


class DetectorScorer:
    """A Ray Data callable class: holds one Detector, turns a batch of paths into report columns."""

    def __init__(
        self,
        weights: Optional[str] = None,
        threshold: Optional[float] = None,
        device: Optional[str] = None,
        threads: int = 1,
    ) -> None:
        from ..detector import Detector

        # ``threads`` batches side by side, each network inference on one thread (as a scan runs)
        self.detector = Detector(weights=weights, threshold=threshold, device=device, threads=threads)
        self.evidence_names = self.detector.evidence_names
        self.columns = columns_for(self.evidence_names)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        items = list(zip(batch["path"], batch["file"]))  # (row name, file)
        rows = []
        for scored in self.detector.score_stream(items, source=_file, batch_size=len(items)):
            name, result = str(scored.item[0]), scored.result
            if isinstance(result, GanFaceError):
                rows.append(error_row(name, result, self.evidence_names))
            else:
                rows.append(verdict_row(name, result, self.evidence_names))
        return {column: [row.get(column) for row in rows] for column in self.columns}


def score_paths(
    files: Sequence[str],
    names: Optional[Sequence[str]] = None,
    *,
    weights: str | os.PathLike[str] | None = None,
    threshold: Optional[float] = None,
    device: Optional[str] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    actors: int = 2,
    threads: int = 1,
    concurrency: Optional[int] = None,
    threads_per_worker: Optional[int] = None,
):
    """A Ray Dataset with one scored row per file (lazy: it runs when consumed or written).

    ``actors``: how many Ray actors score side by side (each a process holding one Detector); ``threads``: the
    threads of each actor's Detector, and the CPUs Ray reserves for it. ``concurrency`` and
    ``threads_per_worker`` are their old names (before 0.2), accepted with a warning for one release."""
    import ray

    if concurrency is not None:
        actors = _renamed("concurrency", "actors", concurrency)
    if threads_per_worker is not None:
        threads = _renamed("threads_per_worker", "threads", threads_per_worker)

    names = list(files) if names is None else list(names)
    items = [{"file": str(f), "path": str(n)} for f, n in zip(files, names)]
    return ray.data.from_items(items).map_batches(
        DetectorScorer,
        fn_constructor_kwargs={
            "weights": None if weights is None else os.fspath(weights),
            "threshold": threshold,
            "device": device,
            "threads": threads,
        },
        batch_size=batch_size,
        concurrency=actors,
        num_cpus=threads,
        batch_format="numpy",
    )


def _file(item: tuple[str, str]) -> str:
    return str(item[1])


def _renamed(old: str, new: str, value: Any) -> Any:
    warnings.warn(f"score_paths({old}=...) is now score_paths({new}=...)", DeprecationWarning, stacklevel=3)
    return value


def score_folder(folder: str | os.PathLike[str], *, recursive: bool = False, **kwargs):
    """Score every image of a folder, rows named as ``gan-face scan`` names them (relative to the folder)."""
    files = collect_files([os.fspath(folder)], recursive=recursive)
    return score_paths([f.path for f in files], [f.display for f in files], **kwargs)
