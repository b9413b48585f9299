"""The clip view's leave-one-family-out matrix over cached CLIP features: each generator family (and the real
sources processed with it) left out of the head's fit in turn, then that family scored against the real sources
no fold fits on, per condition, with bootstrap intervals; and what the studies built on it share (an even sample
of each source, block lists, their options, the printed line). ``scripts/clip_matrix.py`` runs it; so do the
sample studies of ``experiments/``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .._math import sigmoid
from ..card import SecondLook
from .clip_head import fit_stats, head_logits, source_weights
from .features import head_inputs
from .folds import DIFFUSION, FAMILIES, FAMILY_GROUPS, PIPELINE_PARTNERS
from .metrics import bootstrap_auc, ranking_metrics
from .splits import V3_HOLDOUT

EVALUATION_REALS = tuple(s for s in V3_HOLDOUT if s.startswith("real/"))
FFHQ_ALIGNED_REALS = ("real/paired_realorfake", "real/aligned_ffhq_alae")


def parse_blocks(text: str) -> list[int]:
    """Comma-separated blocks or ranges (``"0-3,7,9-10"``) as a sorted list without repeats."""
    blocks: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        blocks.extend(range(int(first), int(last or first) + 1))
    return sorted(set(blocks))


def even_spread(samples, per_source: int, seed: int = 0):
    """At most ``per_source`` images of each source, drawn with a seeded generator (an even, cheaper sample)."""
    rng = np.random.default_rng(seed)
    by_source: dict[str, list] = {}
    for sample in samples:
        by_source.setdefault(sample.source, []).append(sample)
    kept = []
    for source in sorted(by_source):
        members = by_source[source]
        kept.extend(members[i] for i in sorted(rng.permutation(len(members))[:per_source]))
    return kept


def folds() -> dict[str, tuple[tuple[str, ...], bool]]:
    """Every fold of the matrix: name -> (the fake sources it leaves out, whether they are diffusion): each family,
    then each group of families (:data:`.folds.FAMILY_GROUPS`)."""
    result = {family: (tuple(members), family in DIFFUSION) for family, members in FAMILIES.items()}
    for name, families in FAMILY_GROUPS.items():
        members = tuple(source for family in families for source in FAMILIES[family])
        result[name] = (members, all(family in DIFFUSION for family in families))
    return result


@dataclass(frozen=True)
class SecondLookFolds:
    """What the matrix needs to give each fold a second look as the shipped card has one (avatar condition): the
    CLS tokens at the second look's size (``N x 12 x 768``, zeros where not computed), which images have them,
    which its fold heads may fit on (the even sample the shipped head fitted on), the head's settings and the
    card's :class:`gan_face.card.SecondLook` (band and fusion) with the card's threshold."""

    tokens: np.ndarray
    usable: np.ndarray
    trainable: np.ndarray
    blocks: Sequence[int]
    components: int
    shrinkage: float
    look: SecondLook
    threshold: float
    #: extra copies the shipped head also fitted on: ``(tokens, image indices)`` per kind (retouched, FFHQ-framed)
    copies: Sequence[tuple[np.ndarray, np.ndarray]] = ()


def run_matrix(
    features,
    samples,
    usable,
    conditions,
    blocks,
    components,
    shrinkage,
    train_conditions=None,
    fused_with=None,
    extra=None,
    second_look: Optional[SecondLookFolds] = None,
):
    """Every fold's metrics: ``{family: {condition: {...}}}``. With ``fused_with`` (a fusion and rows of the other
    evidence), also the fold's clip score fused with that evidence as the shipped model fuses it. ``extra``: more
    training rows ``(tokens, labels, sources)`` (re-cropped or retouched copies, as the shipped head fits on), each
    fold keeping those of the sources it trains on. ``second_look``: also (avatar) the fold's second look, its
    head fitted without the family, for the images the fold's fused first look leaves in the card's band."""
    sources = np.array([s.source for s in samples])
    labels = np.array([s.label for s in samples])
    train_k = [conditions.index(c) for c in (train_conditions or conditions)]
    x_all = head_inputs(features, blocks)  # N x K x D (float32: about 1.3 GB for 8,700 images x 5 conditions)
    evaluation_reals = np.isin(sources, EVALUATION_REALS) & usable
    unaligned = evaluation_reals & ~np.isin(sources, FFHQ_ALIGNED_REALS)
    result: dict = {}
    for family, (members, diffusion) in folds().items():
        partners = PIPELINE_PARTNERS.get(family, ())
        held = np.isin(sources, list(members) + list(partners))
        train = usable & ~held & ~np.isin(sources, EVALUATION_REALS)
        fakes = usable & np.isin(sources, members)
        if not fakes.any():
            continue
        rows = np.repeat(np.flatnonzero(train), len(train_k))
        ks = np.tile(train_k, train.sum())
        x_train, y_train, train_sources = x_all[rows, ks], labels[rows], sources[rows]
        if extra is not None:
            tokens, extra_labels, extra_sources = extra
            kept = np.isin(extra_sources, np.unique(sources[train]))
            x_train = np.concatenate([x_train, head_inputs(tokens[kept], blocks)])
            y_train = np.concatenate([y_train, extra_labels[kept]])
            train_sources = np.concatenate([train_sources, extra_sources[kept]])
        weights = source_weights(train_sources, y_train)
        stats = fit_stats(x_train, y_train, weights, components)
        entry: dict = {"kind": "diffusion" if diffusion else "gan", "n_train": int(train.sum())}
        second_logits = None
        if second_look is not None:
            second_logits = _second_look_logits(second_look, train, labels, sources)
        for k, condition in enumerate(conditions):
            logits = head_logits(stats, x_all[:, k], shrinkage)
            chosen = fakes | evaluation_reals
            y = labels[chosen]
            m = ranking_metrics(y, logits[chosen])
            m["auc_95"] = bootstrap_auc(y, logits[chosen])
            chosen_u = fakes | unaligned
            m["auc_vs_unaligned_reals"] = ranking_metrics(labels[chosen_u], logits[chosen_u])["auc"]
            real_scores = np.sort(logits[evaluation_reals])[::-1]
            cut = real_scores[int(0.01 * len(real_scores))]
            m["real_flagged_at_1pct_by_source"] = {
                src: round(float(np.mean(logits[(sources == src) & usable] > cut)), 4) for src in EVALUATION_REALS
            }
            m["n_fake"], m["n_real"] = int(fakes.sum()), int(evaluation_reals.sum())
            if fused_with is not None:
                fused = fused_metrics(fused_with, condition, logits, fakes, evaluation_reals, unaligned, labels)
                if fused:
                    m["fused"] = fused
                if fused and second_logits is not None and condition == "avatar":
                    m["fused_with_second_look"] = fused_metrics(
                        fused_with, condition, logits, fakes, evaluation_reals, unaligned, labels,
                        (second_look, second_logits),
                    )  # fmt: skip
            entry[condition] = m
        result[family] = entry
    return result


def _second_look_logits(second: SecondLookFolds, train: np.ndarray, labels, sources) -> np.ndarray:
    """The fold's second-look head (fitted on the images the fold trains on that the shipped head could fit on)
    applied to every image that has second-look tokens."""
    fit = train & second.trainable & second.usable
    x, rows = head_inputs(second.tokens[fit], second.blocks), np.flatnonzero(fit)
    for tokens, indices in second.copies:  # the copies of the images this fold fits on
        kept = fit[indices]
        x = np.concatenate([x, head_inputs(tokens[kept], second.blocks)])
        rows = np.concatenate([rows, indices[kept]])
    stats = fit_stats(x, labels[rows], source_weights(sources[rows], labels[rows]), second.components,
                      sources=sources[rows])  # fmt: skip
    logits = np.full(len(labels), np.nan)
    logits[second.usable] = head_logits(stats, head_inputs(second.tokens[second.usable], second.blocks),
                                        second.shrinkage)  # fmt: skip
    return logits


def fused_metrics(fused_with, condition, logits, fakes, reals, unaligned, labels, second=None) -> dict:
    """The fold's clip score in the shipped fusion with each image's other evidence (rows of this condition).
    ``second``: ``(SecondLookFolds, the fold's second-look logits)``: the images whose fused first likelihood is in
    the card's band get the second look's fusion instead, as the runtime does; the share that did, and how many
    lacked second-look tokens (they keep the first look), are reported."""
    fusion, rows, threshold = fused_with
    by_index = {r["index"]: r for r in rows if r["condition"] == condition}
    chosen = [i for i in np.flatnonzero(fakes | reals) if i in by_index]
    if not chosen:
        return {}
    scores = np.array(
        [fusion.log_odds({**by_index[i]["scores"], "clip": float(sigmoid(logits[i]))}) for i in chosen]
    )
    looked = np.zeros(len(chosen), bool)
    missing = 0
    if second is not None:
        folds, second_logits = second
        first = 1.0 / (1.0 + np.exp(-scores))
        band = (first >= folds.look.band_from) & (first < folds.threshold)
        for j in np.flatnonzero(band):
            i = chosen[j]
            if np.isnan(second_logits[i]):
                missing += 1
                continue
            evidence = {**by_index[i]["scores"], "clip": float(sigmoid(logits[i])),
                        "second_look": float(sigmoid(second_logits[i]))}  # fmt: skip
            scores[j] = folds.look.fusion.log_odds(evidence)
            looked[j] = True
    y = labels[chosen]
    if not y.any():  # this condition was scored for the held-out sources only
        return {}
    m = ranking_metrics(y, scores)
    m["auc_95"] = bootstrap_auc(y, scores)
    keep = np.isin(chosen, np.flatnonzero(fakes | unaligned))
    m["auc_vs_unaligned_reals"] = ranking_metrics(y[keep], scores[keep])["auc"]
    cut = float(np.log(threshold / (1 - threshold)))  # the card's threshold, in log-odds
    m["caught_at_threshold"] = float(np.mean(scores[y == 1] >= cut))
    m["reals_flagged_at_threshold"] = float(np.mean(scores[y == 0] >= cut))
    m["n_fake"], m["n_real"] = int(y.sum()), int((y == 0).sum())
    if second is not None:
        m["second_look_share"] = {"real": float(looked[y == 0].mean()), "generated": float(looked[y == 1].mean())}
        m["band_without_second_look_tokens"] = missing
    return m


def matrix_line(matrix: dict, condition: str) -> str:
    """One condition of a matrix as a printed line: each family's AUC / TPR at 1% FPR (and fused, if measured)."""
    cells = []
    for family, entry in matrix.items():
        m = entry[condition]
        fused = m.get("fused")
        extra = f" (fused {fused['auc']:.3f}/{fused['tpr_at_1pct_fpr']:.2f})" if fused else ""
        if second := m.get("fused_with_second_look"):
            extra += f" (second look {second['auc']:.3f}, {second['caught_at_threshold']:.0%} caught)"
        cells.append(f"{family} {m['auc']:.3f}/{m['tpr_at_1pct_fpr']:.2f}{extra}")
    return "  ".join(cells)


def sample_study_parser(doc: str) -> argparse.ArgumentParser:
    """The options of a study on an even sample of each source with the shipped encoder (``experiments/``)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--work", required=True, type=Path, help="cache folder for faces, crops and features")
    parser.add_argument("--encoder", default="models/clip-vit-b16.safetensors")
    parser.add_argument("--per-source", type=int, default=60)
    parser.add_argument("--blocks", default="7-10")
    parser.add_argument("--components", type=int, default=256)
    parser.add_argument("--shrinkage", type=float, default=0.1)
    parser.add_argument("-o", "--output", type=Path)
    return parser
