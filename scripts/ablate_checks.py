"""What each piece of evidence adds: refit the fusion on feature subsets and compare them on the test half.

    python scripts/ablate_checks.py CALIBRATION_ROWS TEST_ROWS [--max-fpr 0.005] [--json ablation.json]

Reads the rows saved by ``scripts/fit_fusion.py --save-rows`` (calibration half) and
``scripts/evaluate.py --save-rows`` (test half): the same full pipeline, so every check's score is already
there. For each subset (CNN alone; CNN and eye position; the shipped set, which leaves out the spectrum, the
weakest and most resolution-dependent check; every check) it fits the fusion and threshold on the calibration rows exactly as ``fit_fusion.py`` does and prints
AUC and TPR at 1% FPR per held-out source and condition on the test rows, and the FPR at the threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from gan_face.evaluation import group_metrics, load_rows
from gan_face.fusion import fit_on_rows

SUBSETS = {
    "cnn": ("cnn",),
    "cnn+eyes": ("cnn", "eyes"),
    "shipped": ("cnn", "eyes", "symmetry", "background"),
    "all checks": None,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("calibration_rows", type=Path)
    parser.add_argument("test_rows", type=Path)
    parser.add_argument("--max-fpr", type=float, default=0.005)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    calibration, test = load_rows(args.calibration_rows), load_rows(args.test_rows)
    results = {}
    for name, features in SUBSETS.items():
        fusion, threshold = fit_on_rows(calibration, max_fpr=args.max_fpr, features=features)
        results[name] = {"fusion": fusion.to_dict(), "threshold": threshold, "conditions": {}}
        for condition in dict.fromkeys(r["condition"] for r in test):
            chosen = [r for r in test if r["condition"] == condition]
            labels = np.array([r["sample"].label for r in chosen])
            likelihoods = np.array([fusion.likelihood(r["scores"]) for r in chosen])
            sources = np.array([r["sample"].source for r in chosen])
            results[name]["conditions"][condition] = group_metrics(labels, likelihoods, sources, threshold)
    fake_sources = sorted({r["sample"].source for r in test if r["sample"].label == 1})
    header = f"{'condition':10s} {'source':28s}" + "".join(f"{n + ' AUC':>16s}{'TPR@1%':>9s}" for n in SUBSETS)
    print(header)
    for condition in results["cnn"]["conditions"]:
        for source in fake_sources + ["all"]:
            cells = "".join(
                f"{results[n]['conditions'][condition][source]['auc']:16.4f}"
                f"{results[n]['conditions'][condition][source]['tpr_at_1pct_fpr']:9.4f}" for n in SUBSETS
            )
            print(f"{condition:10s} {source:28s}{cells}")
        fprs = "".join(f"{'FPR@thr':>16s}{results[n]['conditions'][condition]['all']['fpr_at_threshold']:9.4f}" for n in SUBSETS)
        print(f"{condition:10s} {'real photos flagged':28s}{fprs}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
