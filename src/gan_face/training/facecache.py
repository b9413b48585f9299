"""An on-disk cache of face detections for training and measurement, so MTCNN runs once per file, not per epoch.

One JSON line per file, keyed by the file's content (size and SHA-256), and written in the aligner's own
settings' file name, so a change of detector settings never reuses stale landmarks. Content, not path and
modification time: a data tree copied afresh (new mtimes, another mount point) still hits the cache, and an
edited file never reuses its old faces. Appending line by line makes an interrupted run resumable.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Sequence

from ..align import Face, FaceAligner, Landmarks
from ..errors import ImageLoadError
from ..io import load_image

log = logging.getLogger(__name__)


def file_key(path: str) -> str:
    """Identifies a file's content: size and SHA-256 (hashing all the shared data takes seconds; MTCNN on it,
    minutes). Memoised per version of the file within a process, as pools ask again for the same files."""
    stat = os.stat(path)
    return _content_key(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _content_key(path: str, size: int, mtime_ns: int) -> str:
    return f"{size}|sha256:{hashlib.sha256(Path(path).read_bytes()).hexdigest()}"


def cache_file(cache_dir: str | os.PathLike[str], aligner: FaceAligner) -> Path:
    return Path(cache_dir) / f"faces_d{aligner.detect_size}_m{aligner.min_face_size}.jsonl"


def face_from_dict(row: dict) -> Face:
    return Face(box=tuple(row["box"]), confidence=row["confidence"], landmarks=Landmarks.from_array(row["points"]))


def face_to_dict(face: Face) -> dict:
    return {"box": list(face.box), "confidence": face.confidence, "points": face.landmarks.to_array().tolist()}


def detect_cached(
    paths: Sequence[str],
    aligner: FaceAligner,
    cache_dir: str | os.PathLike[str],
    *,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, list[Face] | None]:
    """Faces of each path (main face first; ``None`` where the file did not load), computing only what is
    missing."""
    target = cache_file(cache_dir, aligner)
    target.parent.mkdir(parents=True, exist_ok=True)
    known: dict[str, list[Face] | None] = {}
    if target.exists():
        for line in target.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by an interrupted run
                continue
            known[row["key"]] = None if row["faces"] is None else [face_from_dict(f) for f in row["faces"]]
    keys = {path: file_key(path) for path in paths}
    missing = [p for p in paths if keys[p] not in known]
    if missing:
        log.info("detecting faces in %d of %d files (cache: %s)", len(missing), len(paths), target)
        from tqdm import tqdm

        with (
            open(target, "a", encoding="utf-8") as out,
            tqdm(total=len(missing), disable=not progress, desc="faces", unit="img") as bar,
        ):
            for start in range(0, len(missing), batch_size):
                chunk = missing[start : start + batch_size]
                images, loaded = [], []
                for path in chunk:
                    try:
                        images.append(load_image(path))
                        loaded.append(path)
                    except ImageLoadError as exc:
                        log.warning("%s", exc)
                        known[keys[path]] = None
                        out.write(json.dumps({"key": keys[path], "faces": None}) + "\n")
                for path, faces in zip(loaded, aligner.detect_batch(images)):
                    known[keys[path]] = faces
                    out.write(json.dumps({"key": keys[path], "faces": [face_to_dict(f) for f in faces]}) + "\n")
                out.flush()
                bar.update(len(chunk))
    return {path: known[keys[path]] for path in paths}
