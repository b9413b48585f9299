"""Leave one generator family out: the honest measure of "catches generators it has never seen".

Each fold trains the CNN on every training source except one generator family's fakes (and the real photos
processed together with them, :data:`PIPELINE_PARTNERS`), then scores that family
against real sources that no fold ever trains on (:data:`EVALUATION_REALS`), in every evaluation condition. The
CNN is what is measured (its logit ranks the images; AUC and TPR at 1% and 0.1% FPR need no calibration), on a
fixed short schedule so that all folds fit in a few hours of 2-core CPU; the model card says so.

All folds share two crop pools built once: training crops of every trainable image (a fold masks out its left-out
family) and condition crops of every image that is ever evaluated. A fold's checkpoint folder makes it
resumable, and a finished fold is not run again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from .._math import sigmoid
from ..align import Face, Landmarks
from ..card import CnnConfig
from ..checks.eyes import chi2_6_survival, face_geometry, template_distance
from ..fusion import Fusion
from ..io import load_image
from .conditions import CONDITIONS, plan_condition
from .datasets import Sample
from .loop import TrainSettings, predict_pool, train_cnn
from .metrics import ranking_metrics
from .pools import CropPool
from .splits import DEFAULT_HOLDOUT

log = logging.getLogger(__name__)

#: Fake sources by generator family. A fold leaves a whole family out, never a random share of one source.
FAMILIES: Mapping[str, tuple[str, ...]] = {
    "stylegan1": ("fake/kaggle140k_rvf10k_apollophantom",),
    "stylegan2": ("fake/tpdne_junguler", "fake/tpdne_realorfake"),
    "unknown-gan": ("fake/boredhumans_basemax",),
    "sd3": ("fake/sd3_fakerjs",),
    "flux-headshots": ("fake/headshots_flux_invigo",),
    "astria-headshots": ("fake/headshots_astria_ruifei521",),
    "sd15": ("fake/sd15_santyarboleda", "fake/sd15_dhiandika"),
    # scenes of one person at work cut to a headshot, from one study's prompts (issue 36)
    "flux-dev": ("fake/flux_dev_occupations_maximuspowers",),
    "sdxl-turbo": ("fake/sdxl_turbo_occupations_maximuspowers",),
}
DIFFUSION = frozenset({"sd3", "flux-headshots", "astria-headshots", "sd15", "flux-dev", "sdxl-turbo"})
#: Families built on one base model: the clip view's matrix also leaves each group out whole (FLUX.1-dev and the
#: Flux headshot app share FLUX.1), so that neither is measured with its sibling in the fit.
FAMILY_GROUPS: Mapping[str, tuple[str, ...]] = {"flux (both sources)": ("flux-headshots", "flux-dev")}
#: Real sources processed together with a family's fakes (the two halves of one paired data set: same crawl, size
#: and JPEG pipeline). A fold leaves them out of training too: kept, they teach the CNN that the left-out family's
#: processing history means "real", and the fold measures that shortcut rather than the generator (StyleGAN1 fold
#: with its FFHQ partners in training: 0.81 AUC, avatar, short schedule). StyleGAN2's partner is an evaluation
#: real, never trained on anyway.
PIPELINE_PARTNERS: Mapping[str, tuple[str, ...]] = {
    "stylegan1": ("real/paired_kaggle140k_rvf10k_apollophantom",),
    "stylegan2": ("real/paired_realorfake",),
}
#: Real sources no fold trains on: the shipped model's held-out reals (FFHQ-framed portraits, news photos, profile
#: and studio headshots), so fold figures and the model's test half are read against the same kinds of photo.
EVALUATION_REALS = tuple(source for source in DEFAULT_HOLDOUT if source.startswith("real/"))
#: Evaluation reals aligned the FFHQ way (FFHQ itself): their eyes sit on the StyleGAN template by construction,
#: so the eye check cannot tell them from GAN faces. Each fold is also measured against the other reals alone.
FFHQ_ALIGNED_REALS = ("real/paired_realorfake",)


@dataclass(frozen=True)
class Fold:
    family: str
    sources: tuple[str, ...]
    partner_reals: tuple[str, ...] = ()  # left out of training with the family (see PIPELINE_PARTNERS)

    @property
    def kind(self) -> str:
        return "diffusion" if self.family in DIFFUSION else "gan"

    def trains_on(self, source: str) -> bool:
        return source not in self.sources and source not in self.partner_reals


def folds(
    samples: Sequence[Sample],
    families: Mapping[str, Sequence[str]] = FAMILIES,
    partners: Mapping[str, Sequence[str]] = PIPELINE_PARTNERS,
) -> list[Fold]:
    """The folds whose family has images in ``samples``; ``partners={}`` keeps every real source in training."""
    present = {s.source for s in samples}
    return [
        Fold(name, tuple(src), tuple(partners.get(name, ())))
        for name, src in families.items()
        if present & set(src)
    ]


def subset(pool: CropPool, keep: np.ndarray) -> CropPool:
    """The same crops with only ``keep`` usable (a fold's training set, without copying the pool)."""
    return CropPool(pool.samples, pool.crops, pool.usable & keep, pool.key)


def fold_metrics(
    logits: np.ndarray,
    pool: CropPool,
    fold: Fold,
    real_sources: Sequence[str],
    conditions: Sequence[str],
    aligned_reals: Sequence[str] = FFHQ_ALIGNED_REALS,
) -> dict:
    """Per condition: the left-out family against all evaluation reals, each of its sources, the family against
    the reals that are not FFHQ-aligned (``"<family> | reals not FFHQ-aligned"``), and the share of each real
    source above the logit that flags 1% of all evaluation reals."""
    sources = np.array([s.source for s in pool.samples])
    reals = np.isin(sources, real_sources) & pool.usable
    unaligned = reals & ~np.isin(sources, aligned_reals)
    result: dict = {}
    for k, condition in enumerate(conditions):
        scores = logits[:, k]
        real_scores = np.sort(scores[reals])[::-1]
        threshold = real_scores[int(0.01 * len(real_scores))] if len(real_scores) else np.inf
        entry: dict = {}
        groups = [(fold.family, fold.sources, reals), *((src, (src,), reals) for src in fold.sources)]
        if unaligned.any() and unaligned.sum() < reals.sum():
            groups.append((f"{fold.family} | reals not FFHQ-aligned", fold.sources, unaligned))
        for name, members, negatives in groups:
            fakes = np.isin(sources, members) & pool.usable
            if not fakes.any():
                continue
            chosen = fakes | negatives
            m = ranking_metrics(fakes[chosen].astype(int), scores[chosen])
            entry[name] = {**m, "n_fake": int(fakes.sum()), "n_real": int(negatives.sum())}
        entry["real_flagged_at_1pct"] = {
            src: float(np.mean(scores[(sources == src) & pool.usable] > threshold))
            for src in real_sources
            if ((sources == src) & pool.usable).any()
        }
        result[condition] = entry
    return result


def run_fold(
    fold: Fold,
    train_pool: CropPool,
    eval_pool: CropPool,
    config: CnnConfig,
    settings: TrainSettings,
    work: Path,
    *,
    real_sources: Sequence[str] = EVALUATION_REALS,
    conditions: Sequence[str] = CONDITIONS,
) -> dict:
    """Train without ``fold``'s family and measure it (cached as ``work/<family>/result.json``, its logits as
    ``logits.npy``: a finished fold's metrics are recomputed from them, so a new measure needs no retraining)."""
    done, saved = work / fold.family / "result.json", work / fold.family / "logits.npy"
    wanted = np.array([s.source in fold.sources or s.source in real_sources for s in eval_pool.samples])
    if done.exists():
        report = json.loads(done.read_text())
        if saved.exists():
            logits = np.load(saved)
            report["metrics"] = fold_metrics(logits, subset(eval_pool, wanted), fold, real_sources, conditions)
        return report
    started = time.time()
    trained = np.array([fold.trains_on(s.source) for s in train_pool.samples])
    result = train_cnn(subset(train_pool, trained), None, config, settings, checkpoint_dir=work / fold.family)
    from .network import build_cnn

    model = build_cnn(config)
    model.load_state_dict(result.state_dict)
    logits = predict_pool(model, subset(eval_pool, wanted), config)
    np.save(saved, logits)  # NaN outside the fold's family and the evaluation reals
    report = {
        "family": fold.family,
        "kind": fold.kind,
        "sources": list(fold.sources),
        "partner_reals_left_out": list(fold.partner_reals),
        "metrics": fold_metrics(logits, subset(eval_pool, wanted), fold, real_sources, conditions),
        "minutes": round((time.time() - started) / 60, 1),
        "settings": asdict(settings),
    }
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(report, indent=1))
    return report


def condition_eye_scores(
    samples: Sequence[Sample], faces: Mapping[str, Optional[list[Face]]], conditions: Sequence[str] = CONDITIONS
) -> np.ndarray:
    """The eye-position check's score (``N x K``) of each sample's main face under each condition, its landmarks
    moved by the condition's geometry (as the crop pools move them) rather than detected again; NaN without a
    face. Lets the fold's CNN be fused with the eyes as the shipped detector fuses them."""
    scores = np.full((len(samples), len(conditions)), np.nan)
    for i, sample in enumerate(samples):
        found = faces.get(sample.path)
        if not found:
            continue
        height, width = load_image(sample.path).shape[:2]
        points = found[0].landmarks.to_array()
        for k, condition in enumerate(conditions):
            plan = plan_condition(width, height, condition, seed=i)  # seeded like the pool's variant
            moved = points @ plan.matrix[:, :2].T + plan.matrix[:, 2]
            face = Face((0.0, 0.0, 0.0, 0.0), 1.0, Landmarks.from_array(moved))
            scores[i, k] = chi2_6_survival(template_distance(face_geometry(face, *plan.size)))
    return scores


def fused_scores(
    logits: np.ndarray, eye_scores: np.ndarray, fusion: Fusion, frame_logits: Optional[np.ndarray] = None
) -> np.ndarray:
    """The fold's CNN logits fused with the eye scores (and, if given, the same fold's frame-CNN logits) by a
    model card's ``fusion`` (log-odds, ``N x K``; NaN where the CNN has none). Evidence the fusion weighs but the
    folds do not compute counts as absent."""

    def score(values: Optional[np.ndarray], index, squash) -> Optional[float]:
        return None if values is None or np.isnan(values[index]) else squash(float(values[index]))

    fused = np.full(logits.shape, np.nan)
    for index in zip(*np.nonzero(~np.isnan(logits))):
        evidence = {
            "cnn": sigmoid(float(logits[index])),
            "eyes": score(eye_scores, index, float),
            "frame": score(frame_logits, index, sigmoid),
        }
        fused[index] = fusion.log_odds(evidence)
    return fused


def short_schedule(base: Optional[TrainSettings] = None, **changes) -> TrainSettings:
    """The per-fold schedule: a few epochs, no early stopping (there is no fold-specific validation split)."""
    settings = base or TrainSettings(epochs=3, samples_per_epoch=4000, warmup_steps=100)
    return replace(settings, patience=settings.epochs, **changes)
