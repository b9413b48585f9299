"""CLIP features cached on disk: the frozen encoder runs once per crop, and every head (a leave-one-out fold, the
shipped head, a user's fine-tune) is a linear fit over the cache.

The features of a crop pool (:mod:`.pools`: the frame's centred square or the aligned face, K variants per image:
evaluation conditions or training augmentations) are the CLS tokens of the encoder's blocks, computed by the
same :class:`gan_face.clip.ClipEncoder` that scoring runs, stored as float16 in a memory-mapped file
``N x K x depth x 768`` beside the pool. The file is keyed by the pool (its recipe and files) and the encoder
(weights sha256, input size, depth), filled in chunks by ``workers`` processes of one thread each, and a
progress file records the finished chunks, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from ..card import DEFAULT_GROUP_SIZE, file_sha256, load_state_dict
from ..clip import ClipEncoder
from .pools import CropPool

log = logging.getLogger(__name__)

#: Images per cached chunk (the unit of resumption).
CHUNK = 64


def features_key(
    pool: CropPool,
    encoder_sha256: str,
    input_size: int,
    depth: int,
    group_size: int = DEFAULT_GROUP_SIZE,
) -> str:
    spec = {"pool": pool.key, "encoder": encoder_sha256, "input_size": input_size, "depth": depth}
    if group_size != DEFAULT_GROUP_SIZE:  # the keys of caches made before it was a choice stay valid
        spec["group_size"] = group_size
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


class _Worker:
    """One process: the encoder compiled once, then chunks of crops -> tokens."""

    encoder: Optional[ClipEncoder] = None

    def __init__(
        self, encoder_path: str, input_size: int, depth: int, group_size: int, crops_path: str, shape: tuple
    ) -> None:
        self.encoder_path, self.input_size, self.depth = encoder_path, input_size, depth
        self.group_size = group_size
        self.crops_path, self.shape = crops_path, shape

    def __call__(self, chunk: tuple[int, list[int]]):
        if _Worker.encoder is None:
            _Worker.encoder = ClipEncoder(
                load_state_dict(self.encoder_path), self.input_size, self.depth, group_size=self.group_size
            )
        start, rows = chunk
        crops = np.memmap(self.crops_path, np.uint8, "r", shape=self.shape)
        n, k = len(rows), self.shape[1]
        batch = np.asarray(crops[rows]).reshape(n * k, *self.shape[2:])
        return start, rows, _Worker.encoder(batch).reshape(n, k, self.depth, -1).astype(np.float16)


def pool_features(
    pool: CropPool,
    encoder_path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    *,
    input_size: int,
    depth: int,
    group_size: int = DEFAULT_GROUP_SIZE,
    workers: int = 2,
    progress: bool = True,
) -> np.ndarray:
    """``N x K x depth x 768`` float16 CLS tokens of every crop of ``pool`` (zeros where the image had no face),
    computed where missing and cached under ``cache_dir``."""
    if pool.crops.shape[2] != input_size:
        raise ValueError(f"the pool's crops are {pool.crops.shape[2]} px, the encoder is asked for {input_size}")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = features_key(pool, file_sha256(encoder_path), input_size, depth, group_size)
    data_path, done_path = cache_dir / f"clip_{key}.f16", cache_dir / f"clip_{key}.done.json"
    n, k = pool.crops.shape[:2]
    shape = (n, k, depth, 768)
    done: set[int] = set(json.loads(done_path.read_text())["chunks"]) if done_path.exists() else set()
    mode = "r+" if data_path.exists() else "w+"
    features = np.memmap(data_path, np.float16, mode, shape=shape)
    usable = np.flatnonzero(pool.usable)
    chunks = [(s, usable[s : s + CHUNK].tolist()) for s in range(0, len(usable), CHUNK)]
    todo = [c for c in chunks if c[0] not in done]
    if todo:
        log.info("clip features %s: %d of %d chunks to compute (%s)", key, len(todo), len(chunks), data_path)
        worker = _Worker(
            str(encoder_path), input_size, depth, group_size, str(_crops_file(pool)), tuple(pool.crops.shape)
        )
        from tqdm import tqdm

        bar = tqdm(total=sum(len(r) for _, r in todo), disable=not progress, desc="clip features", unit="img")
        if workers > 1:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(workers) as processes:
                for start, rows, tokens in processes.imap_unordered(worker, todo):
                    _store(features, rows, tokens, done, start, done_path)
                    bar.update(len(rows))
        else:
            for chunk in todo:
                start, rows, tokens = worker(chunk)
                _store(features, rows, tokens, done, start, done_path)
                bar.update(len(rows))
        bar.close()
    return np.memmap(data_path, np.float16, "r", shape=shape)


def _store(features: np.ndarray, rows, tokens, done: set[int], start: int, done_path: Path) -> None:
    features[rows] = tokens
    features.flush()
    done.add(start)
    staging = done_path.with_name(done_path.name + ".tmp")
    staging.write_text(json.dumps({"chunks": sorted(done)}))
    os.replace(staging, done_path)


def _crops_file(pool: CropPool) -> Path:
    filename = getattr(pool.crops, "filename", None)
    if filename is None:
        raise ValueError("clip features are computed from a crop pool on disk (build_pool)")
    return Path(filename)


def head_inputs(tokens: np.ndarray, blocks: Mapping[int, int] | list[int]) -> np.ndarray:
    """The head's features (the chosen blocks' CLS tokens side by side) from cached ``... x depth x 768``
    tokens."""
    chosen = np.asarray(tokens)[..., list(blocks), :]
    return chosen.reshape(*chosen.shape[:-2], -1).astype(np.float32)


def condition_features(
    samples,
    conditions,
    encoder_path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    *,
    input_size: int,
    view: str = "frame",
    depth: int = 12,
    group_size: int = DEFAULT_GROUP_SIZE,
    workers: int = 2,
    only: Optional[Sequence[int]] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features of every sample under each condition (``N x len(conditions) x depth x 768``) and which samples
    had a face. One crop pool per condition, so a condition computed once is reused by every later selection of
    conditions; the condition of sample ``i`` is seeded with ``i``, as :func:`.scoring.score_jobs` does.
    ``only``: compute just these samples (the others' rows are zeros and not usable), seeded the same way."""
    from ..card import CnnConfig
    from .pools import ConditionVariants, build_pool

    chosen = list(range(len(samples))) if only is None else sorted(only)
    subset = [samples[i] for i in chosen]
    features = np.zeros((len(samples), len(conditions), depth, 768), np.float16)
    usable = np.zeros(len(samples), bool)
    for k, condition in enumerate(conditions):
        variants = ConditionVariants([condition], seeds=None if only is None else chosen)
        spec = {"conditions": [condition], **({} if only is None else {"seeds": "index in the whole data set"})}
        pool = build_pool(
            subset,
            cache_dir,
            CnnConfig(input_size=input_size, view=view),
            variants=1,
            make_variant=variants,
            spec=spec,
            workers=workers,
        )
        computed = pool_features(
            pool,
            encoder_path,
            cache_dir,
            input_size=input_size,
            depth=depth,
            group_size=group_size,
            workers=workers,
        )
        features[chosen, k] = computed[:, 0]
        usable[chosen] = pool.usable
    return features, usable


def variant_features(
    samples,
    name: str,
    encoder_path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    *,
    input_size: int,
    view: str = "frame",
    group_size: int = DEFAULT_GROUP_SIZE,
    workers: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """``N x 12 x 768`` CLS tokens of one extra copy of every sample (:func:`.pools.extra_variants` ``name``:
    re-cropped the FFHQ way, or retouched), and which samples had a face; both cached like the conditions."""
    from ..card import CnnConfig
    from .pools import build_pool, extra_variants

    make_variant, spec = extra_variants(name)
    pool = build_pool(
        samples, cache_dir, CnnConfig(input_size=input_size, view=view), variants=1, make_variant=make_variant,
        spec=spec, workers=workers,
    )  # fmt: skip
    tokens = pool_features(
        pool, encoder_path, cache_dir, input_size=input_size, depth=12, group_size=group_size, workers=workers
    )
    return np.asarray(tokens)[:, 0], pool.usable


def extra_copies(
    samples, usable: np.ndarray, names: Sequence[str], encoder_path, cache_dir, **options
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """For each of ``names`` (:func:`.pools.extra_variants`): ``(name, tokens, indices)``, the copies' CLS tokens
    of every usable sample outside the held-out sources (one cache, whatever a fit leaves out later) that had a
    face, and those samples' indices in ``samples``. ``options``: :func:`variant_features`'s."""
    from .splits import V3_HOLDOUT

    pooled = np.flatnonzero(usable & ~np.isin([s.source for s in samples], V3_HOLDOUT))
    copies = []
    for name in names:
        tokens, found = variant_features([samples[i] for i in pooled], name, encoder_path, cache_dir, **options)
        copies.append((name, tokens[found], pooled[found]))
    return copies
