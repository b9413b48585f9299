"""The evidence map study: train a per-cell head on composites of training sources, measure it on composites of
held-out sources (issue 37, item 1).

    python scripts/evidence_map.py ../shared/data --cache /work/cache/map --json /work/cache/map/report.json
        [--input-size 256] [--blocks 8] [--epochs 6] [--n-train 2000] [--n-heldout 800] [--time-budget 900]

Composites are made once and kept under ``--cache`` (in chunks: an interrupted build resumes); training
checkpoints there after every epoch and resumes. Prints pointing and cell AUC per direction and per generated
source, with 95% intervals, and the forward cost of one picture on one thread; writes the report to ``--json``
and the weights (safetensors) to ``--weights`` (default: under ``--cache``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from gan_face._runtime import tune_allocator
from gan_face.training.evidence_map import MapSettings, format_report, run_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="the labelled tree (real/<source>, fake/<source>)")
    parser.add_argument("--cache", type=Path, required=True, help="composites, checkpoints and weights go here")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--weights", type=Path, help="safetensors file (default: CACHE/map_<size>px_b<blocks>)")
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--blocks", type=int, default=8, choices=(5, 8, 11), help="Lite0 blocks kept")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-heldout", type=int, default=800)
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--time-budget", type=float, help="stop training after the epoch that passes this (s)")
    parser.add_argument("--workers", type=int, default=2, help="processes making composites")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    tune_allocator()
    settings = MapSettings(
        input_size=args.input_size,
        blocks=args.blocks,
        epochs=args.epochs,
        lr=args.lr,
        time_budget_s=args.time_budget,
    )
    weights = args.weights or args.cache / f"map_{args.input_size}px_b{args.blocks}_lr{args.lr:g}.safetensors"
    report = run_study(
        args.data, args.cache, settings, args.n_train, args.n_heldout, weights, args.json, workers=args.workers
    )
    print(format_report(report))
    print(f"weights: {weights}")


if __name__ == "__main__":
    main()
