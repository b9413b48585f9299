"""Fit the fusion and its threshold on labelled data, and write them into a model card.

    python scripts/fit_fusion.py ../shared/data --card models/gan-face-v1.json [--sources fake/x,real/y]
        [--conditions clean,avatar] [--max-fpr 0.01]

Runs the full Detector (aligner, CNN if the card has one, every check) on each image under each condition,
fits the logistic fusion on the check scores (classes weighted equally), picks the threshold that flags at most
``--max-fpr`` of the real photos, and stores fusion, threshold and the per-source fit metrics in the card.
Use only sources the card's CNN did not train on (``--sources``), or the fusion learns to trust it too much.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from gan_face.card import ModelCard
from gan_face.detector import Detector
from gan_face.training.datasets import index_tree, manifest_digest
from gan_face.training.fitting import fit_on_rows
from gan_face.training.metrics import format_table, group_metrics
from gan_face.training.scoring import load_rows, save_rows, score_samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--card", required=True, help="model card to update (its fusion and threshold)")
    parser.add_argument("--sources", help="comma-separated sources to fit on (default: all)")
    parser.add_argument("--conditions", default="clean", help="comma-separated conditions (default: clean)")
    parser.add_argument("--max-fpr", type=float, default=0.01)
    parser.add_argument(
        "--max-source-fpr",
        type=float,
        help="also flag at most this share of each real source (of at least 1/share photos) in every condition",
    )
    parser.add_argument("--save-rows", type=Path, help="also save every scored image's check scores (JSON lines)")
    parser.add_argument("--from-rows", type=Path, help="fit from rows saved by --save-rows with this card's CNN")
    parser.add_argument(
        "--half",
        help="with --from-rows: only rows marked with this half (scripts/train_clip_head.py --rows-out marks the "
        "held-out sources' calibration and test halves)",
    )
    parser.add_argument(
        "--features",
        help="comma-separated evidence to fuse (default: every check the detector "
        "runs); the others are still reported, with no weight",
    )
    args = parser.parse_args()

    samples = index_tree(args.data)
    if args.sources:
        wanted = set(args.sources.split(","))
        samples = [s for s in samples if s.source in wanted]
    conditions = args.conditions.split(",")
    if args.from_rows:
        rows = [r for r in load_rows(args.from_rows) if r["sample"].source in {s.source for s in samples}]
        if args.half:
            rows = [r for r in rows if r.get("half") == args.half]
        conditions = list(dict.fromkeys(r["condition"] for r in rows))
    else:
        rows = score_samples(Detector(weights=args.card), samples, conditions)
    if args.save_rows:
        save_rows(rows, args.save_rows)
    fusion, threshold = fit_on_rows(
        rows,
        max_fpr=args.max_fpr,
        features=args.features.split(",") if args.features else None,
        max_source_fpr=args.max_source_fpr,
    )
    labels = np.array([r["sample"].label for r in rows])
    likelihoods = np.array([fusion.likelihood(r["scores"]) for r in rows])
    sources = np.array([r["sample"].source for r in rows])
    report = group_metrics(labels, likelihoods, sources, threshold)
    print(format_table(report, ["n_real", "n_fake", "auc", "tpr_at_1pct_fpr", "fpr_at_threshold", "ece"]))
    print("fusion:", json.dumps(fusion.to_dict()), "threshold:", threshold)

    card = ModelCard.load(args.card)
    card = card.replace(fusion=fusion, threshold=threshold).with_sections(
        fusion_fit={
            "data_manifest_sha256": manifest_digest([args.data]),
            "sources": sorted({r["sample"].source for r in rows}),
            **({"half": args.half} if args.half else {}),
            "conditions": conditions,
            "features": list(fusion.features),
            "max_fpr": args.max_fpr,
            **({"max_source_fpr": args.max_source_fpr} if args.max_source_fpr is not None else {}),
            "metrics": report,
        }
    )
    card.save(args.card)
    print(f"wrote {args.card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
