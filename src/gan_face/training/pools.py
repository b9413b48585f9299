"""Aligned crops cached on disk ("crop pools"): MTCNN runs once per file (``facecache``) and the augmented crops
are computed once into a pool (``K`` variants per image), so a training epoch costs only the CNN."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..align import FaceAligner, Landmarks
from ..card import CnnConfig
from ..io import load_image
from ..views import cut_view
from .augment import Augmentation, degrade
from .conditions import CONDITIONS, FFHQ_TEMPLATE, condition_with_transform, face_square, ffhq_realign
from .datasets import Sample
from .facecache import detect_cached, file_key

log = logging.getLogger(__name__)


@dataclass
class CropPool:
    """Aligned crops on disk: ``crops[i, k]`` is variant ``k`` of sample ``i``; ``usable[i]`` if a face was
    found."""

    samples: list[Sample]
    crops: np.ndarray  # uint8 memmap, N x K x S x S x 3
    usable: np.ndarray  # bool, N
    key: str = ""  # identifies the crops (recipe and files): caches of what is computed from them key on it

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples])


def _pool_key(paths: Sequence[str], spec: dict) -> str:
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    for path in paths:  # which files, in which version: changed or other files never reuse old crops
        digest.update(file_key(path).encode())
    return digest.hexdigest()[:16]


def build_pool(
    samples: Sequence[Sample],
    cache_dir: str | os.PathLike[str],
    config: CnnConfig,
    *,
    variants: int,
    make_variant: Callable[[np.ndarray, np.ndarray, int, int], tuple[np.ndarray, np.ndarray]],
    spec: dict,
    aligner: Optional[FaceAligner] = None,
    workers: int = 2,
) -> CropPool:
    """Crops of every sample under ``make_variant(image, points, sample_index, k)``, cached under ``cache_dir``.

    ``spec`` describes ``make_variant`` (augmentation settings, seed, conditions) and keys the cache, so a change
    of recipe never reuses stale crops. The config's view says what is stored (:func:`gan_face.views.cut_view`):
    the aligned face, or the whole frame of each image where a face was found.
    """
    cache_dir = Path(cache_dir)
    aligner = aligner or FaceAligner()
    paths = [s.path for s in samples]
    faces = detect_cached(paths, aligner, cache_dir)
    # only what shapes the crops: scoring options (normalisation, dropout, mirror averaging) reuse the pool
    spec = {
        **spec,
        "input_size": config.input_size,
        "crop_template": config.to_dict()["crop_template"],
        "variants": variants,
        **({"view": config.view} if config.view != "face" else {}),  # face pools keep the keys they always had
    }
    key = _pool_key(paths, spec)
    size = config.input_size
    data_path, done_path = cache_dir / f"pool_{key}.u8", cache_dir / f"pool_{key}.done.json"
    shape = (len(samples), variants, size, size, 3)
    usable = np.array([bool(faces[p]) for p in paths])
    if done_path.exists():
        log.info("crop pool %s: reusing %s", key, data_path)
        return CropPool(list(samples), np.memmap(data_path, np.uint8, "r", shape=shape), usable, key)
    log.info("crop pool %s: %d images x %d variants at %d px", key, len(samples), variants, size)
    crops = np.memmap(data_path, np.uint8, "w+", shape=shape)
    jobs = [(i, p, faces[p][0].landmarks.to_array()) for i, p in enumerate(paths) if faces[p]]
    template = np.asarray(config.crop_template)
    from tqdm import tqdm

    worker = _PoolWorker(make_variant, variants, size, template, config.view)
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers, initializer=_one_thread_per_process) as pool:
            for i, stack in tqdm(pool.imap(worker, jobs, chunksize=8), total=len(jobs), desc="crops", unit="img"):
                crops[i] = stack
    else:
        for job in tqdm(jobs, desc="crops", unit="img"):
            crops[job[0]] = worker(job)[1]
    crops.flush()
    done_path.write_text(json.dumps({"spec": spec, "n": len(samples)}, default=str))
    return CropPool(list(samples), np.memmap(data_path, np.uint8, "r", shape=shape), usable, key)


def _one_thread_per_process() -> None:
    """In each pool process: one torch thread, as the processes already share the cores. Never called in the
    main process (``workers=1`` runs the jobs there): the training loop that follows must keep every core."""
    torch.set_num_threads(1)


class _PoolWorker:
    def __init__(self, make_variant, variants: int, size: int, template: np.ndarray, view: str) -> None:
        self.make_variant, self.variants, self.size, self.template = make_variant, variants, size, template
        self.view = view

    def __call__(self, job):
        index, path, points = job
        image = load_image(path)
        stack = np.empty((self.variants, self.size, self.size, 3), np.uint8)
        for k in range(self.variants):
            degraded, moved = self.make_variant(image, points, index, k)
            stack[k] = cut_view(degraded, Landmarks.from_array(moved), self.view, self.size, self.template)
        return index, stack


class TrainVariants:
    """``make_variant`` for training pools: the random history of :class:`Augmentation`, seeded per image."""

    def __init__(self, aug: Augmentation, seed: int, labels: Sequence[int]) -> None:
        self.aug, self.seed, self.labels = aug, seed, list(labels)

    def __call__(self, image, points, index, k):
        rng = np.random.default_rng([self.seed, index, k])
        return degrade(image, points, rng, self.aug, self.labels[index])


class FfhqVariants:
    """``make_variant`` for a pool of FFHQ-style re-crops (:func:`.conditions.ffhq_realign`), one per image."""

    def __call__(self, image, points, index, k):
        return ffhq_realign(image, points), FFHQ_TEMPLATE * 400


class RetouchVariants:
    """``make_variant`` for a pool of retouched copies (:func:`.retouch.retouch`), one per image, then one of
    ``conditions`` (drawn per image), all seeded by ``seed`` and the image's index."""

    def __init__(self, seed: int, conditions: Sequence[str] = ("avatar", "gray", "laundered")) -> None:
        self.seed, self.conditions = seed, tuple(conditions)

    def __call__(self, image, points, index, k):
        from .retouch import retouch

        rng = np.random.default_rng([self.seed, index, k])
        polished = retouch(image, points, rng)
        condition = self.conditions[int(rng.integers(len(self.conditions)))]
        conditioned, matrix = condition_with_transform(polished, condition, seed=int(rng.integers(2**31)))
        return conditioned, points @ matrix[:, :2].T + matrix[:, 2]


class ReframeVariants:
    """``make_variant`` for a pool of headshots cut from each picture (:func:`.conditions.face_square`): a square
    ``widths`` interocular distances wide (log-uniform in the range), moved off centre by up to ``max_shift``,
    JPEG quality in ``qualities``, then the avatar condition; seeded by ``seed`` and the image's index."""

    def __init__(self, seed: int, widths=(3.5, 8.0), max_shift: float = 0.5, qualities=(85, 96)) -> None:
        self.seed, self.widths, self.max_shift, self.qualities = seed, tuple(widths), max_shift, tuple(qualities)

    def spec(self) -> dict:
        return {"widths": list(self.widths), "max_shift": self.max_shift, "qualities": list(self.qualities)}

    def __call__(self, image, points, index, k):
        rng = np.random.default_rng([self.seed, index, k])
        widths = float(np.exp(rng.uniform(*np.log(self.widths))))
        shift = rng.uniform(-self.max_shift, self.max_shift, size=2)
        cut, first = face_square(image, points, widths, shift, int(rng.integers(*self.qualities)))
        conditioned, second = condition_with_transform(cut, "avatar", seed=index)
        moved = points @ first[:, :2].T + first[:, 2]
        return conditioned, moved @ second[:, :2].T + second[:, 2]


#: The extra copies the clip head can fit on beside each training image (``scripts/train_clip_head.py
#: --variants``): an FFHQ-style re-crop (framing is not evidence), a retouched copy (polish is not evidence) and
#: a headshot cut at a random width around the face (how tight a shot is cut is not evidence).
EXTRA_VARIANTS = ("ffhq", "retouch", "reframe")


def extra_variants(name: str):
    """``(make_variant, spec)`` of one of :data:`EXTRA_VARIANTS`; the spec keys the crop cache."""
    from dataclasses import asdict

    from .retouch import Retouch

    if name == "ffhq":
        return FfhqVariants(), {"variants": "ffhq_realign"}
    if name == "retouch":
        maker = RetouchVariants(seed=0)
        spec = {"variants": "retouch", "seed": 0, "recipe": asdict(Retouch()), "then": list(maker.conditions)}
        return maker, spec
    if name == "reframe":
        maker = ReframeVariants(seed=0)
        return maker, {"variants": "reframe", "seed": 0, **maker.spec()}
    raise ValueError(f"unknown variants {name!r}; expected one of {EXTRA_VARIANTS}")


class ConditionVariants:
    """``make_variant`` for validation pools: variant ``k`` is evaluation condition ``conditions[k]``, seeded
    with the image's index in the pool, or with ``seeds[index]`` (a pool of some images of a data set, seeded as
    the whole data set's pool and :func:`.scoring.score_jobs` seed them)."""

    def __init__(self, conditions: Sequence[str] = CONDITIONS, seeds: Optional[Sequence[int]] = None) -> None:
        self.conditions = tuple(conditions)
        self.seeds = None if seeds is None else list(seeds)

    def __call__(self, image, points, index, k):
        seed = index if self.seeds is None else self.seeds[index]
        conditioned, matrix = condition_with_transform(image, self.conditions[k], seed=seed)
        moved = points @ matrix[:, :2].T + matrix[:, 2]
        return conditioned, moved
