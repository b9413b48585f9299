"""The evidence map, as a study: a fully-convolutional truncated EfficientNet-Lite0 that gives one logit per cell
of a grid over the avatar, trained on composites (:mod:`.composites`) of training sources and measured on
composites of held-out sources.

Measures, per direction (a generated region in a real photo; a real region in a generated picture):

* pointing: the share of pictures whose highest cell is mostly (> 50%) generated pixels, with a Clopper-Pearson
  interval;
* cell AUC: cells at least 75% generated against cells at most 25% generated, pooled over the pictures, with a
  95% interval from resampling pictures (cells of one picture are not independent).

Whole pictures (all real, all generated) are image-level examples in training; on the held-out side their
highest cell is reported as an image-level score.
"""

from __future__ import annotations

import json
import logging
import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .composites import Plan, make_composite, plan_composites
from .datasets import Sample, index_tree
from .loop import pretrained_state
from .metrics import clopper_pearson
from .network import EfficientNetLite0
from .splits import V3_HOLDOUT

log = logging.getLogger(__name__)

#: Blocks of Lite0 kept: 5 ends at stride 8 (40 channels), 8 and 11 at stride 16 (80, 112 channels).
STRIDE = {5: 8, 8: 16, 11: 16}
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@dataclass
class MapSettings:
    input_size: int = 256
    blocks: int = 8
    epochs: int = 6
    batch_size: int = 32
    lr: float = 6e-4
    weight_decay: float = 1e-4
    seed: int = 0
    time_budget_s: Optional[float] = None

    @property
    def cells(self) -> int:
        return self.input_size // STRIDE[self.blocks]


class EvidenceNet(nn.Module):
    """Lite0's stem and first ``blocks`` blocks, then a 1x1 convolution: one logit per cell."""

    def __init__(self, blocks: int = 8) -> None:
        super().__init__()
        lite = EfficientNetLite0()
        self._conv_stem, self._bn0 = lite._conv_stem, lite._bn0
        self._blocks = nn.ModuleList(list(lite._blocks)[:blocks])
        self.head = nn.Conv2d(self._blocks[-1]._bn2.num_features, 1, 1)
        nn.init.zeros_(self.head.weight)  # start at p = 0.5 everywhere: the features' scale made the first
        nn.init.zeros_(self.head.bias)  # steps' logits large and wrong (loss above ln 2 for a whole epoch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``N x 3 x S x S`` in [0, 1] to ``N x cells x cells`` logits."""
        x = F.relu6(self._bn0(self._conv_stem((x - MEAN) / STD)), inplace=True)
        for block in self._blocks:
            x = block(x)
        return self.head(x).squeeze(1)

    def load_imagenet(self) -> None:
        state = pretrained_state()
        own = self.state_dict()
        kept = {k: v for k, v in state.items() if k in own}
        self.load_state_dict(kept | {k: own[k] for k in own if k.startswith("head.")})


# --- the composites, made once and cached as chunks ---------------------------------------------------------


def split_samples(data_root: str) -> dict[str, list[Sample]]:
    """Training sources' samples and held-out sources' (``V3_HOLDOUT``) samples."""
    samples = index_tree(data_root)
    return {
        "train": [s for s in samples if s.source not in V3_HOLDOUT],
        "heldout": [s for s in samples if s.source in V3_HOLDOUT],
    }


_ALIGNER = None


def _make_chunk(args: tuple[list[Plan], str]) -> str:
    plans, path = args
    global _ALIGNER
    if _ALIGNER is None:
        from ..align import FaceAligner

        _ALIGNER = FaceAligner()
    images, fractions, meta = [], [], []
    for plan in plans:
        try:
            c = make_composite(plan.host, plan.donor, plan.region, plan.seed, aligner=_ALIGNER)
        except Exception as error:  # an unreadable file: skip the composite, say so
            log.warning("composite %d skipped: %s", plan.seed, error)
            continue
        images.append(c.image)
        fractions.append(np.round(c.fraction * 255).astype(np.uint8))
        generated = c.host if c.host.label == 1 else c.donor
        meta.append(
            {
                "host": c.host.source,
                "donor": c.donor.source if c.donor else None,
                "host_label": c.host.label,
                "region": c.region,
                "generator": generated.generator if generated else None,
                "generated_source": generated.source if generated else None,
            }
        )
    tmp = Path(path).with_suffix(".tmp.npz")
    np.savez(tmp, images=np.stack(images), fractions=np.stack(fractions), meta=json.dumps(meta))
    tmp.rename(path)
    return path


def build_composites(
    data_root: str, cache: Path, split: str, count: int, seed: int, workers: int = 2, chunk: int = 100
) -> list[Path]:
    """``count`` composites of ``split``'s sources in chunks under ``cache/split``; finished chunks are kept, so
    an interrupted build resumes."""
    plans = plan_composites(split_samples(data_root)[split], count, seed)
    folder = Path(cache) / split
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"chunk{i // chunk:03d}.npz" for i in range(0, count, chunk)]
    todo = [(plans[i : i + chunk], str(p)) for i, p in zip(range(0, count, chunk), paths) if not p.exists()]
    if todo:
        with ProcessPoolExecutor(workers) as pool:
            for done in pool.map(_make_chunk, todo):
                log.info("composites: %s", done)
    return paths


def load_composites(paths: Sequence[Path], size: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Images resized to ``size`` (``N x size x size x 3``), generated fractions at 400 px, and their records."""
    images, fractions, meta = [], [], []
    for path in paths:
        with np.load(path) as data:
            images += [
                np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in data["images"]
            ]
            fractions.append(data["fractions"])
            meta += json.loads(str(data["meta"]))
    return np.stack(images), np.concatenate(fractions), meta


def cell_targets(fractions: np.ndarray, cells: int) -> torch.Tensor:
    """The generated share of each cell (area average of the 400 px truth onto a ``cells`` grid)."""
    frac = torch.from_numpy(fractions).float().div_(255.0).unsqueeze(1)
    return F.adaptive_avg_pool2d(frac, cells).squeeze(1)


def _batch(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


# --- training -----------------------------------------------------------------------------------------------


def train(images: np.ndarray, targets: torch.Tensor, settings: MapSettings, checkpoint: Path) -> EvidenceNet:
    """Per-cell BCE against each cell's generated share, mirrored at random; AdamW with warm-up and a cosine
    decay. A checkpoint after every epoch lets a run resume."""
    torch.manual_seed(settings.seed)
    model = EvidenceNet(settings.blocks)
    model.load_imagenet()
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(images) / settings.batch_size)
    total = steps_per_epoch * settings.epochs

    def rate(step: int) -> float:
        warm = min(1.0, (step + 1) / 100)
        return warm * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, rate)
    start = 0
    if checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        scheduler.load_state_dict(saved["scheduler"])
        start = int(saved["epoch"])
        log.info("resumed after epoch %d", start)
    generator = np.random.default_rng(settings.seed)
    began = time.monotonic()
    for epoch in range(start, settings.epochs):
        model.train()
        order = np.random.default_rng([settings.seed, epoch]).permutation(len(images))
        losses = []
        for i in range(0, len(order), settings.batch_size):
            index = np.sort(order[i : i + settings.batch_size])
            x, y = _batch(images[index]), targets[index]
            if generator.random() < 0.5:
                x, y = x.flip(3), y.flip(2)
            loss = F.binary_cross_entropy_with_logits(model(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            losses.append(loss.item())
            if len(losses) % 10 == 0:
                log.info("epoch %d step %d/%d loss %.4f", epoch + 1, len(losses), steps_per_epoch, np.mean(losses))
        log.info("epoch %d done: loss %.4f (%.0f s)", epoch + 1, np.mean(losses), time.monotonic() - began)
        tmp = checkpoint.with_suffix(".tmp")
        torch.save(
            {
                "model": model.state_dict(),
                "optimiser": optimiser.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch + 1,
            },
            tmp,
        )
        tmp.rename(checkpoint)
        if settings.time_budget_s is not None and time.monotonic() - began > settings.time_budget_s:
            log.info("time budget reached after epoch %d", epoch + 1)
            break
    return model.eval()


@torch.inference_mode()
def predict(model: EvidenceNet, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Cell probabilities ``N x cells x cells``."""
    model.eval()
    chunks = range(0, len(images), batch_size)
    return np.concatenate([torch.sigmoid(model(_batch(images[i : i + batch_size]))).numpy() for i in chunks])


# --- measuring ----------------------------------------------------------------------------------------------


def picture_bootstrap_auc(truth: list[np.ndarray], scores: list[np.ndarray], rounds: int = 200, seed: int = 0):
    """A 95% interval of the pooled cell AUC, resampling pictures (each picture's cells stay together)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        pick = rng.integers(0, len(truth), len(truth))
        y = np.concatenate([truth[i] for i in pick])
        s = np.concatenate([scores[i] for i in pick])
        if 0 < y.sum() < len(y):
            values.append(roc_auc_score(y, s))
    return [round(float(np.percentile(values, 2.5)), 4), round(float(np.percentile(values, 97.5)), 4)]


def map_metrics(probabilities: np.ndarray, targets: np.ndarray) -> dict:
    """Pointing and cell AUC over pictures (``N x cells x cells`` predictions and generated shares)."""
    from sklearn.metrics import roc_auc_score

    hits, truth, scores = [], [], []
    for p, t in zip(probabilities, targets):
        p, t = p.ravel(), t.ravel()
        keep = (t >= 0.75) | (t <= 0.25)
        if not ((t >= 0.75).any() and (t <= 0.25).any()):
            continue  # nothing to rank (a region that covers too little or too much)
        hits.append(bool(t[int(np.argmax(p))] > 0.5))
        truth.append((t[keep] >= 0.75).astype(int))
        scores.append(p[keep])
    n, k = len(hits), int(sum(hits))
    low, high = clopper_pearson(k, n)
    y, s = np.concatenate(truth), np.concatenate(scores)
    return {
        "n_pictures": n,
        "pointing": round(k / n, 4),
        "pointing_95": [round(low, 4), round(high, 4)],
        "cell_auc": round(float(roc_auc_score(y, s)), 4),
        "cell_auc_95": picture_bootstrap_auc(truth, scores),
        "n_cells": [int(y.sum()), int(len(y) - y.sum())],
        "chance_pointing": round(float(np.mean([t.mean() for t in truth])), 4),
    }


def evaluate(probabilities: np.ndarray, targets: np.ndarray, meta: list[dict]) -> dict:
    """Per direction and per generated source; image-level AUC of the highest cell on whole pictures."""
    from sklearn.metrics import roc_auc_score

    report: dict = {"directions": {}, "by_generated_source": {}}
    names = {0: "generated region in a real photo", 1: "real region in a generated picture"}
    for host_label, name in names.items():
        index = [i for i, m in enumerate(meta) if m["region"] != "whole" and m["host_label"] == host_label]
        report["directions"][name] = map_metrics(probabilities[index], targets[index])
        for source in sorted({meta[i]["generated_source"] for i in index}):
            sub = [i for i in index if meta[i]["generated_source"] == source]
            report["by_generated_source"][f"{name} / {source}"] = map_metrics(probabilities[sub], targets[sub])
        for region in ("square", "face", "background"):
            sub = [i for i in index if meta[i]["region"] == region]
            if sub:
                report["by_generated_source"][f"{name} / region {region}"] = map_metrics(
                    probabilities[sub], targets[sub]
                )
    whole = [i for i, m in enumerate(meta) if m["region"] == "whole"]
    if whole:
        labels = [meta[i]["host_label"] for i in whole]
        top = probabilities[whole].reshape(len(whole), -1).max(axis=1)
        report["whole_pictures"] = {
            "n": [int(sum(labels)), len(labels) - int(sum(labels))],
            "auc_top_cell": round(float(roc_auc_score(labels, top)), 4),
        }
    return report


def forward_ms(model: EvidenceNet, size: int, runs: int = 30) -> float:
    """Median milliseconds of one picture's forward pass on one thread (torch, eager)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    x = torch.rand(1, 3, size, size)
    times = []
    with torch.inference_mode():
        model.eval()
        for i in range(runs + 5):
            began = time.perf_counter()
            model(x)
            if i >= 5:
                times.append((time.perf_counter() - began) * 1000)
    torch.set_num_threads(threads)
    return round(float(np.median(times)), 2)


def format_report(report: dict) -> str:
    rows = [f"{'':58s} {'n':>4s} {'pointing':>22s} {'cell AUC':>22s}"]
    for group in ("directions", "by_generated_source"):
        for name, m in report[group].items():
            rows.append(
                f"{name:58s} {m['n_pictures']:4d} {m['pointing']:6.1%} [{m['pointing_95'][0]:.2f}, "
                f"{m['pointing_95'][1]:.2f}] (chance {m['chance_pointing']:.2f}) "
                f"{m['cell_auc']:.3f} [{m['cell_auc_95'][0]:.3f}, {m['cell_auc_95'][1]:.3f}]"
            )
        rows.append("")
    if "whole_pictures" in report:
        rows.append(f"whole pictures (fake, real) {report['whole_pictures']['n']}: image AUC of the top cell "
                    f"{report['whole_pictures']['auc_top_cell']:.3f}")  # fmt: skip
    rows.append(f"forward cost: {report['forward_ms_one_thread']} ms a picture (torch, one thread)")
    return "\n".join(rows)


def run_study(
    data_root: str,
    cache: Path,
    settings: MapSettings,
    n_train: int,
    n_heldout: int,
    weights: Path,
    output: Optional[Path] = None,
    workers: int = 2,
) -> dict:
    """Make (or reuse) the composites, train (or resume), measure on the held-out composites, save the weights
    (safetensors) and the report (JSON)."""
    from ..card import save_weights

    cache = Path(cache)
    train_paths = build_composites(data_root, cache, "train", n_train, seed=1, workers=workers)
    held_paths = build_composites(data_root, cache, "heldout", n_heldout, seed=2, workers=workers)
    cells = settings.cells
    images, fractions, _ = load_composites(train_paths, settings.input_size)
    name = f"map_{settings.input_size}px_b{settings.blocks}_lr{settings.lr:g}"
    model = train(images, cell_targets(fractions, cells), settings, cache / f"{name}.ckpt")
    del images
    held_images, held_fractions, meta = load_composites(held_paths, settings.input_size)
    probabilities = predict(model, held_images)
    report = evaluate(probabilities, cell_targets(held_fractions, cells).numpy(), meta)
    report["forward_ms_one_thread"] = forward_ms(model, settings.input_size)
    report["settings"] = asdict(settings) | {"cells": cells, "n_train": n_train, "n_heldout": n_heldout}
    save_weights(model.state_dict(), weights, metadata={"study": "evidence_map", **report["settings"]})
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(report, indent=1) + "\n")
    return report
