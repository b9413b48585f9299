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
from collections import defaultdict
from pathlib import Path

import numpy as np

from gan_face.datasets import index_tree, manifest_digest
from gan_face.detector import Detector
from gan_face.evaluation import apply_condition, format_table, metrics
from gan_face.fusion import Fusion, fit_fusion, threshold_at_fpr
from gan_face.io import load_image


def score_checks(detector: Detector, samples, conditions, batch_size: int = 32):
    """Check scores (per evidence name) and labels/sources for every sample under every condition."""
    from tqdm import tqdm

    rows = []
    work = [(i, s, c) for c in conditions for i, s in enumerate(samples)]
    for start in tqdm(range(0, len(work), batch_size), desc="scoring", unit="batch"):
        chunk = work[start : start + batch_size]
        images = [apply_condition(load_image(s.path), c, seed=i) for i, s, c in chunk]
        for (i, s, c), verdict in zip(chunk, detector.score_arrays(images)):
            rows.append({"sample": s, "condition": c, "scores": {k: r.score for k, r in verdict.checks.items()}})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--card", required=True, help="model card to update (its fusion and threshold)")
    parser.add_argument("--sources", help="comma-separated sources to fit on (default: all)")
    parser.add_argument("--conditions", default="clean", help="comma-separated conditions (default: clean)")
    parser.add_argument("--max-fpr", type=float, default=0.01)
    args = parser.parse_args()

    samples = index_tree(args.data)
    if args.sources:
        wanted = set(args.sources.split(","))
        samples = [s for s in samples if s.source in wanted]
    conditions = args.conditions.split(",")
    detector = Detector(weights=args.card)
    rows = score_checks(detector, samples, conditions)
    names = list(rows[0]["scores"])
    labels = [r["sample"].label for r in rows]
    fusion = fit_fusion({n: [r["scores"][n] for r in rows] for n in names}, labels)
    likelihoods = np.array([fusion.likelihood(r["scores"]) for r in rows])
    threshold = threshold_at_fpr(likelihoods[np.array(labels) == 0], args.max_fpr)

    report = fit_report(rows, likelihoods, threshold)
    print(format_table(report, ["n_real", "n_fake", "auc", "tpr_at_1pct_fpr", "fpr_at_threshold", "ece"]))
    print("fusion:", json.dumps(fusion.to_dict()), "threshold:", round(threshold, 6))

    card_path = Path(args.card)
    card = json.loads(card_path.read_text())
    card["fusion"] = fusion.to_dict()
    card["threshold"] = round(threshold, 6)
    card["fusion_fit"] = {
        "data_manifest_sha256": manifest_digest([args.data]),
        "sources": sorted({s.source for s in samples}),
        "conditions": conditions,
        "max_fpr": args.max_fpr,
        "metrics": report,
    }
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {card_path}")
    return 0


def fit_report(rows, likelihoods, threshold) -> dict[str, dict[str, float]]:
    """Metrics pooled and per source: each fake source against all reals, each real source against all fakes."""
    labels = np.array([r["sample"].label for r in rows])
    sources = np.array([r["sample"].source for r in rows])
    report = {"all": metrics(labels, likelihoods, threshold)}
    for source in sorted(set(sources)):
        mask = (sources == source) | (labels != labels[sources == source][0])
        report[source] = metrics(labels[mask], likelihoods[mask], threshold)
    return report


if __name__ == "__main__":
    sys.exit(main())
