"""The fine-tune's head step: the clip view's linear head refitted with the user's images added to what the base
head learnt, in minutes and without shipping any training image or its features.

The base head file holds the sufficient statistics of its training features (:mod:`.clip_head`). The user's
training images, each under every evaluation condition (clean, avatar, laundered, cropped, gray: the JPEG,
resize, crop and grayscale histories a profile photo goes through), are encoded by the runtime's own
:class:`gan_face.clip.ClipEncoder` (the code that scores, so training and scoring see the same features) and
added to those statistics: the user's fakes weigh as one more source of the fake class, the user's reals as one
more real source, each times ``emphasis`` (how much more than a base source the user's own data counts). The
new head is the same shrunk LDA solved on the sums, so everything the base saw keeps its say.

The features are computed by ``workers`` threads (one OpenVINO stream each) and kept in chunks in the run's
``.partial/`` folder, so an interrupted run resumes without recomputing them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..align import FaceAligner, Landmarks
from ..card import ModelCard
from ..errors import WeightsError
from ..io import load_image
from ..views import cut_view
from .clip_head import HeadStats, head_tensors
from .conditions import CONDITIONS, condition_with_transform
from .datasets import Sample
from .facecache import detect_cached

log = logging.getLogger(__name__)

#: The variants of each training image the head sees.
HEAD_CONDITIONS = CONDITIONS
#: Images per cached chunk (the unit of resumption).
FEATURE_CHUNK = 8
#: Seconds of the feature step per image and variant, for the pre-check's estimate: gan-face-v3 (144 px) on 2 idle
#: cores of an AMD EPYC VM, 349 images x 5 variants in 22 s, decoding and encoder compilation included. With other
#: jobs holding both cores it was up to 100 times slower (1.2 s at nice 19 under full load, with the first v3).
SECONDS_PER_VARIANT = 0.013


def estimate_seconds(n_images: int, conditions: Sequence[str] = HEAD_CONDITIONS) -> float:
    return n_images * len(conditions) * SECONDS_PER_VARIANT


def user_features(
    samples: Sequence[Sample],
    card: ModelCard,
    aligner: FaceAligner,
    face_cache: Path,
    folder: Path,
    *,
    conditions: Sequence[str] = HEAD_CONDITIONS,
    workers: int = 2,
    progress: bool = False,
) -> np.ndarray:
    """``N x len(conditions) x D`` features of the head (``card.clip.config.blocks``' CLS tokens) of every
    sample under every condition, computed where ``folder`` does not hold them yet (float16, as stored).

    Variant ``c`` of sample ``i`` is ``apply_condition(image, conditions[c], seed=i)``; the encoder input is cut
    as scoring cuts it (:func:`gan_face.views.cut_view`, landmarks moved with the condition's geometry)."""
    from ..clip import ClipEncoder
    from ..graphs.runtime import runtime_device

    if card.clip is None:
        raise ValueError(f"{card.path}: this model has no clip view")
    config = card.clip.config
    folder.mkdir(parents=True, exist_ok=True)
    faces = detect_cached([s.path for s in samples], aligner, face_cache)
    chunks = [list(range(s, min(s + FEATURE_CHUNK, len(samples)))) for s in range(0, len(samples), FEATURE_CHUNK)]
    todo = [rows for rows in chunks if not _chunk_path(folder, rows[0]).exists()]
    if todo:
        encoder_state, _ = card.load_clip_state()
        encoder = ClipEncoder.for_config(encoder_state, config, runtime_device(None), workers)
        template = np.asarray(config.crop_template)

        def compute(rows: list[int]) -> None:
            crops = []
            for i in rows:
                image = load_image(samples[i].path)
                points = faces[samples[i].path][0].landmarks.to_array()
                for condition in conditions:
                    conditioned, matrix = condition_with_transform(image, condition, seed=i)
                    moved = Landmarks.from_array(points @ matrix[:, :2].T + matrix[:, 2])
                    crops.append(cut_view(conditioned, moved, config.view, config.input_size, template))
            tokens = encoder(np.stack(crops))[:, list(config.blocks), :]
            features = tokens.reshape(len(rows), len(conditions), -1).astype(np.float16)
            _save_chunk(folder, rows[0], features, [samples[i].path for i in rows])

        from tqdm import tqdm

        started = time.time()
        bar = tqdm(total=sum(map(len, todo)), disable=not progress, desc="clip features", unit="img")
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clip-features") as pool:
            for rows in pool.map(lambda rows: compute(rows) or rows, todo):
                bar.update(len(rows))
        bar.close()
        n = sum(map(len, todo))
        log.info("clip features: %d images x %d conditions in %.1f s (%.3f s an image)", n, len(conditions),
                 time.time() - started, (time.time() - started) / n)  # fmt: skip
    return np.concatenate([_load_chunk(folder, rows[0], [samples[i].path for i in rows]) for rows in chunks])


def _chunk_path(folder: Path, start: int) -> Path:
    return folder / f"features_{start:06d}.npy"


def _save_chunk(folder: Path, start: int, features: np.ndarray, paths: list[str]) -> None:
    """A chunk's features and the files they are of, each written under a staging name and renamed, features
    last (their presence marks the chunk done)."""
    target = _chunk_path(folder, start)
    listing = target.with_suffix(".json")
    listing.with_suffix(".staging").write_text(json.dumps(paths))
    os.replace(listing.with_suffix(".staging"), listing)
    staging = target.with_name(target.stem + ".staging.npy")
    np.save(staging, features, allow_pickle=False)
    os.replace(staging, target)


def _load_chunk(folder: Path, start: int, paths: list[str]) -> np.ndarray:
    target = _chunk_path(folder, start)
    if json.loads(target.with_suffix(".json").read_text()) != paths:  # run.json pins the files; this is a guard
        raise RuntimeError(f"{target}: computed for other files; remove {folder} and run again")
    return np.load(target, allow_pickle=False).astype(np.float32)


def base_sources(stats: HeadStats, card: ModelCard) -> np.ndarray:
    """Sources per class (real, fake) in the base head: its ``stats.sources``, else counted from the card's
    ``clip_training.train_sources`` (``real/...`` and ``fake/...``)."""
    if stats.sources is not None:
        return np.asarray(stats.sources, np.int64)
    names = (card.sections.get("clip_training") or {}).get("train_sources") or []
    counted = np.array([sum(str(n).startswith(p) for n in names) for p in ("real/", "fake/")], np.int64)
    if np.any(counted == 0):
        raise WeightsError(
            f"{card.path}: the clip head's file does not say how many sources each class holds (stats.sources) "
            "and the card's clip_training.train_sources does not name them"
        )
    return counted


def refit_head(
    base_tensors: Mapping[str, np.ndarray],
    card: ModelCard,
    features: np.ndarray,
    labels: np.ndarray,
    emphasis: float,
) -> tuple[dict[str, np.ndarray], dict]:
    """The new head file's tensors (runtime head + statistics + shrinkage, as :func:`.clip_head.head_tensors`)
    and what was done, from the base head's tensors and the user's ``N x variants x D`` features.

    Each class of the user's images weighs ``emphasis`` times one source of that class in the base (the base
    class's total weight over its number of sources), spread evenly over the class's images and variants."""
    if "stats.weight" not in base_tensors:
        raise WeightsError(f"{card.path}: the base clip head has no statistics (stats.*) to add the images to")
    stats = HeadStats.from_tensors(base_tensors)
    sources = base_sources(stats, card)
    shrinkage = float(np.asarray(base_tensors["shrinkage"]).ravel()[0])
    labels = np.asarray(labels)
    variants = features.shape[1]
    rows = features.reshape(-1, features.shape[-1])
    row_labels = np.repeat(labels, variants)
    per_source = stats.weight / sources
    counts = np.array([(row_labels == c).sum() for c in (0, 1)])
    weights = np.where(row_labels == 1, emphasis * per_source[1] / counts[1], emphasis * per_source[0] / counts[0])
    new = stats.plus(rows, row_labels, weights)
    new = HeadStats(new.mean, new.scale, new.basis, new.weight, new.first, new.second, sources + 1)
    info = {
        "base_sources": {"real": int(sources[0]), "fake": int(sources[1])},
        "emphasis": emphasis,
        "added_weight": {kind: float(new.weight[c] - stats.weight[c]) for c, kind in enumerate(("real", "fake"))},
        "images": {"real": int((labels == 0).sum()), "fake": int((labels == 1).sum())},
        "variants": variants,
        "shrinkage": shrinkage,
    }
    return head_tensors(new, shrinkage), info
