"""Evaluate a model by the protocol of DESIGN.md on any folder tree of ``real/`` and ``fake/`` images.

    python scripts/evaluate.py DATA [--weights models/gan-face-v1.json]
        [--conditions clean,avatar,laundered,cropped]
        [--json results.json] [--threshold T] [--save-rows rows.jsonl | --from-rows rows.jsonl]
        [--store-in-card "PROTOCOL"]

For each condition (clean; avatar: centre square, 400 px, JPEG 85; laundered: random size and JPEG quality;
cropped: random 70-95% crop) runs the full pipeline on every image and reports, per source and per generator:
AUC, TPR at 1% and 0.1% FPR, FPR and TPR at the shipped threshold, and expected calibration error; each fake
source is measured against all real photos and each real source against all fakes. Also each check's AUC alone.
Prints tables and writes everything to ``--json``. ``--from-rows`` re-fuses rows saved by ``--save-rows`` (every
check's score is in them) with the card's current fusion, without scoring again: for a card whose CNN is the same
but whose fusion was refitted. ``--store-in-card`` writes the report into the ``--weights`` card's ``evaluation``
section, described by the protocol text given (which data, why it is held out).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gan_face._runtime import configure_threads
from gan_face.detector import Detector
from gan_face.training.conditions import CONDITIONS
from gan_face.training.datasets import index_tree
from gan_face.training.metrics import evaluation_report, format_table
from gan_face.training.scoring import load_rows, save_rows, score_jobs, score_samples
from gan_face.training.splits import held_out_half

COLUMNS = ["n_real", "n_fake", "auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "fpr_at_threshold", "ece"]


def markdown_tables(report: dict, threshold: float) -> str:
    """Per condition: fused metrics per source and generator, then each check's AUC alone."""
    lines = []
    for condition, result in report.items():
        lines += [
            f"**{condition}** (threshold {threshold:.4f}; no face found in {result['no_face_rate']:.1%})",
            "",
            "| group | n real | n fake | AUC | TPR@1%FPR | TPR@0.1%FPR | FPR@thr | ECE |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for group, m in {
            **result["by_source"],
            **{f"generator {k}": v for k, v in result["by_generator"].items()},
        }.items():
            lines.append(
                f"| {group} | {m['n_real']} | {m['n_fake']} | {m['auc']:.4f} | {m['tpr_at_1pct_fpr']:.4f} | "
                f"{m['tpr_at_0.1pct_fpr']:.4f} | {m['fpr_at_threshold']:.4f} | {m['ece']:.4f} |"
            )
        checks = result["check_auc"]
        groups = list(next(iter(checks.values())))
        lines += ["", "| check alone (AUC) | " + " | ".join(groups) + " |", "|---" * (len(groups) + 1) + "|"]
        for name, values in checks.items():
            lines.append(f"| {name} | " + " | ".join(f"{values[g]:.4f}" for g in groups) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder with real/ and fake/ subfolders (one folder per source)")
    parser.add_argument("--weights", help="model card or weights (default: the shipped model)")
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--threshold", type=float, help="override the model's threshold")
    parser.add_argument("--json", type=Path, help="write the full report here")
    parser.add_argument("--markdown", type=Path, help="write the tables as Markdown here (for a model card)")
    parser.add_argument("--save-rows", type=Path, help="also save every scored image's check scores (JSON lines)")
    parser.add_argument("--from-rows", type=Path, help="re-fuse rows saved by --save-rows with the same CNN")
    parser.add_argument("--store-in-card", metavar="PROTOCOL", help="write the report into the --weights card")
    parser.add_argument(
        "--held-out-half",
        choices=("calibration", "test"),
        help="only this half of the held-out sources (training.splits.V3_HOLDOUT split by identity, seed 0), "
        "each image's condition seeded by its index in the whole data set (as the feature caches)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from gan_face._runtime import tune_allocator

    tune_allocator()
    samples = index_tree(args.data)
    conditions = [c for c in args.conditions.split(",") if c]
    unknown = set(conditions) - set(CONDITIONS)
    if unknown:
        parser.error(f"unknown conditions {sorted(unknown)}; choose from {CONDITIONS}")
    detector = Detector(weights=args.weights, threshold=args.threshold, threads=configure_threads())
    if args.from_rows:
        rows = [r for r in load_rows(args.from_rows) if r["condition"] in conditions]
        for row in rows:  # a row with a second-look score is one the second look decided (the detector's rule)
            fusion = detector.card.fusion_for(row["scores"])
            row["likelihood"] = fusion.likelihood(row["scores"]) if fusion.has_evidence(row["scores"]) else None
        samples = list({r["sample"].path: r["sample"] for r in rows}.values())
    elif args.held_out_half:
        wanted = {s.path for s in held_out_half(samples, args.held_out_half)}
        jobs = [(i, c) for c in conditions for i, s in enumerate(samples) if s.path in wanted]
        rows = score_jobs(detector, samples, jobs, batch_size=args.batch_size, progress=not args.quiet)
        samples = [s for s in samples if s.path in wanted]
    else:
        rows = score_samples(detector, samples, conditions, batch_size=args.batch_size, progress=not args.quiet)
    if args.save_rows:
        save_rows(rows, args.save_rows)
    report = evaluation_report(rows, detector.threshold)
    for condition, result in report.items():
        print(f"\n== {condition} (threshold {detector.threshold:.4f}; no face in {result['no_face_rate']:.1%})")
        print(format_table(result["by_source"], COLUMNS))
        print(format_table(result["by_generator"], COLUMNS))
        checks = result["check_auc"]
        groups = list(next(iter(checks.values())))
        print("check AUC alone: " + ", ".join(groups))
        for name, values in checks.items():
            print(f"  {name:12s}" + "".join(f"{values[g]:9.4f}" for g in groups))
    if args.markdown:
        args.markdown.write_text(markdown_tables(report, detector.threshold) + "\n")
        print(f"wrote {args.markdown}")
    payload = {
        "model": detector.card.name,
        "threshold": detector.threshold,
        "data": str(args.data),
        "n_images": len(samples),
        "conditions": report,
    }
    if args.json:
        args.json.write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")
        print(f"\nwrote {args.json}")
    if args.store_in_card:
        if args.threshold is not None or detector.card.path is None:
            parser.error("--store-in-card needs --weights naming a card, scored at its own threshold")
        data = f"{args.held_out_half} half of the held-out sources" if args.held_out_half else args.data.name
        stored = {k: v for k, v in payload.items() if k != "model"} | {"data": data}  # no local paths
        evaluation = {"protocol": args.store_in_card, **stored}
        detector.card.with_sections(evaluation=evaluation).save(detector.card.path)
        print(f"wrote the evaluation into {detector.card.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
