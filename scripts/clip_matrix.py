"""The clip view's leave-one-family-out matrix over cached CLIP features: each generator family (and the real
sources processed with it) left out of the head's fit in turn, then that family scored against real sources no
fold fits on, per condition, with bootstrap intervals. A fold is a linear fit over cached features: seconds.

    python scripts/clip_matrix.py ../shared/data --encoder WORK/clip12.safetensors --work WORK
        [--size 160] [--view frame] [--conditions avatar,clean,laundered,cropped,gray] [--blocks 0-11]
        [--components 256] [--shrinkage 0.1] [--per-source N] [-o matrix.json]

The crops (``training.pools``) and features (``training.features``) are cached under ``--work`` and reused by
every later run (and by ``scripts/train_clip_head.py``); ``--blocks`` and the head's settings cost a refit only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from gan_face._math import sigmoid
from gan_face._runtime import tune_allocator
from gan_face.card import DEFAULT_GROUP_SIZE, ModelCard
from gan_face.training.clip_head import fit_stats, head_logits, source_weights
from gan_face.training.datasets import index_tree
from gan_face.training.features import condition_features, head_inputs
from gan_face.training.folds import DIFFUSION, FAMILIES, PIPELINE_PARTNERS
from gan_face.training.metrics import ranking_metrics
from gan_face.training.scoring import load_rows
from gan_face.training.splits import V3_HOLDOUT

EVALUATION_REALS = tuple(s for s in V3_HOLDOUT if s.startswith("real/"))
FFHQ_ALIGNED_REALS = ("real/paired_realorfake", "real/aligned_ffhq_alae")


def parse_blocks(text: str) -> list[int]:
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


def bootstrap_auc(labels: np.ndarray, scores: np.ndarray, rounds: int = 200, seed: int = 0) -> list[float]:
    """A 95% interval of the AUC, resampling fakes and reals separately."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    fakes, reals = scores[labels == 1], scores[labels == 0]
    values = []
    for _ in range(rounds):
        f = rng.choice(fakes, len(fakes))
        r = rng.choice(reals, len(reals))
        values.append(roc_auc_score(np.r_[np.ones(len(f)), np.zeros(len(r))], np.r_[f, r]))
    return [round(float(np.percentile(values, 2.5)), 4), round(float(np.percentile(values, 97.5)), 4)]


def run_matrix(
    features, samples, usable, conditions, blocks, components, shrinkage, train_conditions=None, fused_with=None
):
    """Every fold's metrics: ``{family: {condition: {...}}}``. With ``fused_with`` (a fusion and rows of the other
    evidence), also the fold's clip score fused with that evidence as the shipped model fuses it."""
    sources = np.array([s.source for s in samples])
    labels = np.array([s.label for s in samples])
    train_k = [conditions.index(c) for c in (train_conditions or conditions)]
    x_all = head_inputs(features, blocks)  # N x K x D (float32: about 1.3 GB for 8,700 images x 5 conditions)
    evaluation_reals = np.isin(sources, EVALUATION_REALS) & usable
    unaligned = evaluation_reals & ~np.isin(sources, FFHQ_ALIGNED_REALS)
    result: dict = {}
    for family, members in FAMILIES.items():
        partners = PIPELINE_PARTNERS.get(family, ())
        held = np.isin(sources, list(members) + list(partners))
        train = usable & ~held & ~np.isin(sources, EVALUATION_REALS)
        fakes = usable & np.isin(sources, members)
        if not fakes.any():
            continue
        rows = np.repeat(np.flatnonzero(train), len(train_k))
        ks = np.tile(train_k, train.sum())
        x_train = x_all[rows, ks]
        y_train = labels[rows]
        weights = source_weights(sources[rows], y_train)
        stats = fit_stats(x_train, y_train, weights, components)
        entry: dict = {"kind": "diffusion" if family in DIFFUSION else "gan", "n_train": int(train.sum())}
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
            entry[condition] = m
        result[family] = entry
    return result


def fused_metrics(fused_with, condition, logits, fakes, reals, unaligned, labels) -> dict:
    """The fold's clip score in the shipped fusion with each image's other evidence (rows of this condition)."""
    fusion, rows, threshold = fused_with
    by_index = {r["index"]: r for r in rows if r["condition"] == condition}
    chosen = [i for i in np.flatnonzero(fakes | reals) if i in by_index]
    if not chosen:
        return {}
    scores = np.array(
        [fusion.log_odds({**by_index[i]["scores"], "clip": float(sigmoid(logits[i]))}) for i in chosen]
    )
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
    return m


def matrix_line(matrix: dict, condition: str) -> str:
    """One condition of a matrix as a printed line: each family's AUC / TPR at 1% FPR (and fused, if measured)."""
    cells = []
    for family, entry in matrix.items():
        m = entry[condition]
        fused = m.get("fused")
        extra = f" (fused {fused['auc']:.3f}/{fused['tpr_at_1pct_fpr']:.2f})" if fused else ""
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--encoder", required=True, help="the encoder's weights (all 12 blocks for studies)")
    parser.add_argument("--work", required=True, type=Path, help="cache folder for faces, crops and features")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--view", default="frame", choices=("frame", "face"))
    parser.add_argument("--conditions", default="avatar")
    parser.add_argument("--train-conditions", help="conditions the folds fit on (default: all of --conditions)")
    parser.add_argument("--blocks", default="0-11", help="comma-separated blocks or ranges; several sets by ';'")
    parser.add_argument("--components", type=int, default=256)
    parser.add_argument("--shrinkage", type=float, default=0.1)
    parser.add_argument("--group-size", type=int, default=DEFAULT_GROUP_SIZE, help="int8 activation group")
    parser.add_argument("--per-source", type=int, default=0, help="at most this many images per source")
    parser.add_argument("--card", help="also fuse each fold's clip score with this card's fusion (as shipped)")
    parser.add_argument(
        "--evidence-rows",
        type=Path,
        nargs="*",
        default=(),
        help="the other evidence of each image (rows of train_clip_head.py --rows-out)",
    )
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    tune_allocator()

    samples = index_tree(args.data)
    if args.per_source:
        samples = even_spread(samples, args.per_source)
    conditions = args.conditions.split(",")
    features, usable = condition_features(
        samples,
        conditions,
        args.encoder,
        args.work,
        input_size=args.size,
        view=args.view,
        group_size=args.group_size,
    )
    fused_with = None
    if args.card:
        card = ModelCard.load(args.card)
        fused_with = (card.fusion, [r for p in args.evidence_rows for r in load_rows(p)], card.threshold)
    report = {
        "data": str(args.data),
        "size": args.size,
        "view": args.view,
        "conditions": conditions,
        "components": args.components,
        "shrinkage": args.shrinkage,
        "per_source": args.per_source,
        "group_size": args.group_size,
        "evaluation_reals": list(EVALUATION_REALS),
        "runs": {},
    }
    for block_text in args.blocks.split(";"):
        blocks = parse_blocks(block_text)
        started = time.time()
        train_conditions = args.train_conditions.split(",") if args.train_conditions else None
        matrix = run_matrix(
            features,
            samples,
            usable,
            conditions,
            blocks,
            args.components,
            args.shrinkage,
            train_conditions,
            fused_with,
        )
        report["runs"][block_text] = matrix
        print(f"\nblocks {block_text} ({time.time() - started:.0f} s)")
        for condition in conditions:
            print(f"  {condition:9s} " + matrix_line(matrix, condition))
    if args.output:
        args.output.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
