"""What each piece of evidence adds: refit the fusion on feature subsets and compare them on the test half.

    python experiments/ablate_checks.py CALIBRATION_ROWS TEST_ROWS [--max-fpr 0.005] [--max-source-fpr 0.01]
        [--json ablation.json]

Reads the rows saved by ``scripts/fit_fusion.py --save-rows`` (calibration half) and
``scripts/evaluate.py --save-rows`` (test half): the same full pipeline, so every check's score is already
there. For each subset of evidence:

1. **selection**: repeated two-fold cross-validation on the calibration rows alone (folds split by image, so
   an image's four conditions stay together): mean AUC and TPR at 1% FPR per condition. This is how the
   shipped set is chosen; the test half plays no part in it.
2. **report**: the fusion and threshold fitted on all calibration rows exactly as ``fit_fusion.py`` does, then
   AUC and TPR at 1% FPR per held-out source and condition on the test rows, and the FPR at the threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from gan_face.training.fitting import fit_on_rows
from gan_face.training.metrics import group_metrics, tpr_at_fpr
from gan_face.training.scoring import load_rows

SUBSETS = {
    "cnn": ("cnn",),
    "cnn+eyes": ("cnn", "eyes"),
    "cnn+frame": ("cnn", "frame"),
    "cnn+frame+eyes": ("cnn", "frame", "eyes"),
    "+background": ("cnn", "frame", "eyes", "background"),
    "+symmetry": ("cnn", "frame", "eyes", "symmetry", "background"),
    "all evidence": None,
}


def cross_validate(rows: list[dict], features, max_fpr: float, repeats: int = 5) -> dict[str, dict[str, float]]:
    """Mean AUC and TPR at 1% FPR per condition over ``repeats`` two-fold splits of the rows by image."""
    from sklearn.metrics import roc_auc_score

    paths = sorted({r["sample"].path for r in rows})
    rng = np.random.default_rng(0)
    scores: dict[str, dict[str, list[float]]] = {}
    for _ in range(repeats):
        fold = {paths[j]: i % 2 for i, j in enumerate(rng.permutation(len(paths)))}
        for k in (0, 1):
            fusion, _ = fit_on_rows([r for r in rows if fold[r["sample"].path] != k], max_fpr, features)
            held = [r for r in rows if fold[r["sample"].path] == k]
            for condition in dict.fromkeys(r["condition"] for r in held):
                chosen = [r for r in held if r["condition"] == condition]
                labels = np.array([r["sample"].label for r in chosen])
                values = np.array([fusion.log_odds(r["scores"]) for r in chosen])
                cell = scores.setdefault(condition, {"auc": [], "tpr_at_1pct_fpr": []})
                cell["auc"].append(float(roc_auc_score(labels, values)))
                cell["tpr_at_1pct_fpr"].append(tpr_at_fpr(labels, values, 0.01))
    return {c: {k: float(np.mean(v)) for k, v in cell.items()} for c, cell in scores.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("calibration_rows", type=Path)
    parser.add_argument("test_rows", type=Path)
    parser.add_argument("--max-fpr", type=float, default=0.005)
    parser.add_argument("--max-source-fpr", type=float, help="as fit_fusion.py's (the report's thresholds)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    calibration, test = load_rows(args.calibration_rows), load_rows(args.test_rows)
    results = {}
    print("selection: two-fold cross-validation on the calibration half, AUC / TPR at 1% FPR")
    for name, features in SUBSETS.items():
        cv = cross_validate(calibration, features, args.max_fpr)
        mean_tpr = np.mean([v["tpr_at_1pct_fpr"] for v in cv.values()])
        print(
            f"  {name:22s}"
            + "".join(f"  {c} {v['auc']:.4f} / {v['tpr_at_1pct_fpr']:.3f}" for c, v in cv.items())
            + f"  mean TPR {mean_tpr:.3f}"
        )
        fusion, threshold = fit_on_rows(
            calibration, max_fpr=args.max_fpr, features=features, max_source_fpr=args.max_source_fpr
        )
        results[name] = {
            "fusion": fusion.to_dict(),
            "threshold": threshold,
            "calibration_cv": cv,
            "conditions": {},
        }
        for condition in dict.fromkeys(r["condition"] for r in test):
            chosen = [r for r in test if r["condition"] == condition]
            labels = np.array([r["sample"].label for r in chosen])
            likelihoods = np.array([fusion.likelihood(r["scores"]) for r in chosen])
            sources = np.array([r["sample"].source for r in chosen])
            results[name]["conditions"][condition] = group_metrics(labels, likelihoods, sources, threshold)
    fake_sources = sorted({r["sample"].source for r in test if r["sample"].label == 1})
    print("report: fitted on the calibration half, measured on the test half")
    header = f"{'condition':10s} {'source':28s}" + "".join(
        f"{n[:16] + ' AUC':>22s}{'TPR@1%':>9s}" for n in SUBSETS
    )
    print(header)
    for condition in results["cnn"]["conditions"]:
        for source in fake_sources + ["all"]:
            cells = "".join(
                f"{results[n]['conditions'][condition][source]['auc']:22.4f}"
                f"{results[n]['conditions'][condition][source]['tpr_at_1pct_fpr']:9.4f}"
                for n in SUBSETS
            )
            print(f"{condition:10s} {source:28s}{cells}")
        fprs = "".join(
            f"{'FPR@thr':>22s}{results[n]['conditions'][condition]['all']['fpr_at_threshold']:9.4f}"
            for n in SUBSETS
        )
        print(f"{condition:10s} {'real photos flagged':28s}{fprs}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
