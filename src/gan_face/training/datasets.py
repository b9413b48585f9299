"""Labelled folder trees for training and evaluation: ``ROOT/real/<source>/...`` and ``ROOT/fake/<source>/...``.

A source is the first folder below ``real/`` or ``fake/`` (files directly in them form a source named after the
label). A ``MANIFEST.csv`` in a source folder, as in ``shared/data``, adds the generator and an identity group
per file; without one every file is its own identity and the generator is the source's name.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..files import discover

LABELS = {"real": 0, "fake": 1}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    path: str
    label: int  # 1: GAN-generated, 0: real photo
    source: str  # "<real|fake>/<folder>"
    generator: str  # "real" for real photos
    identity: str  # images sharing an identity must sit on one side of a split


def index_tree(root: str | os.PathLike[str]) -> list[Sample]:
    """Every image below ``root/real`` and ``root/fake``, sorted by path (stable across machines)."""
    root = Path(root)
    samples: list[Sample] = []
    for label_name, label in LABELS.items():
        label_dir = root / label_name
        if not label_dir.is_dir():
            continue
        found = discover([label_dir], recursive=True)
        for item in found.files:
            if item.problem is not None:
                log.warning("%s: %s", item.path, item.problem)
                continue
            relative = Path(item.display)
            folder = relative.parts[0] if len(relative.parts) > 1 else label_name
            source = f"{label_name}/{folder}"
            row = _manifest(label_dir / folder if len(relative.parts) > 1 else label_dir).get(relative.name, {})
            samples.append(
                Sample(
                    path=item.path,
                    label=label,
                    source=source,
                    generator="real" if label == 0 else (row.get("generator") or folder),
                    identity=f"{source}/{_identity(relative.name, row)}",
                )
            )
    if not samples:
        raise FileNotFoundError(f"{root}: no images under real/ or fake/")
    return samples


_MANIFEST_CACHE: dict[Path, dict[str, dict[str, str]]] = {}


def _manifest(folder: Path) -> dict[str, dict[str, str]]:
    if folder not in _MANIFEST_CACHE:
        manifest = folder / "MANIFEST.csv"
        rows: dict[str, dict[str, str]] = {}
        if manifest.is_file():
            with open(manifest, newline="", encoding="utf-8") as handle:
                rows = {row["file"]: row for row in csv.DictReader(handle)}
        _MANIFEST_CACHE[folder] = rows
    return _MANIFEST_CACHE[folder]


def _identity(file_name: str, row: dict[str, str]) -> str:
    origin = row.get("origin_path", "")
    match = re.search(r"(celeb_\d+)/", origin)  # CelebA: one folder per person
    if match:
        return match.group(1)
    if row.get("upstream_dataset") == "other" and "_" in file_name:  # film frames: Actor_N.jpg
        return file_name.rsplit("_", 1)[0]
    return file_name


def manifest_digest(roots: Iterable[str | os.PathLike[str]]) -> str:
    """SHA-256 over the MANIFEST.csv files of the trees, identifying the exact training data."""
    digest = hashlib.sha256()
    for root in roots:
        for manifest in sorted(Path(root).glob("*/*/MANIFEST.csv")):
            digest.update(str(manifest.relative_to(root)).encode())
            digest.update(manifest.read_bytes())
    return digest.hexdigest()
