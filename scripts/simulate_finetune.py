"""Simulate a new generator appearing: fine-tune a base that never saw one GAN source on 200 of its faces.

    python scripts/simulate_finetune.py ../shared/data --base models/gan-face-v1.json --splits /tmp/heldout
        [--source fake/boredhumans_basemax] [--n-fake 200] [--n-real 300] [--json simulation.json]

``--splits`` is the folder ``scripts/train.py --split-out`` wrote (held-out ``calibration/`` and ``test/``
halves). The new source must be one the base's CNN never trained on. Steps:

1. A base whose fusion has not seen the new source either: the base card with its fusion refitted on the
   calibration half without that source.
2. User folders: ``--n-fake`` faces of the new source and ``--n-real`` real photos, all from the calibration
   half (so none of them is in the test half).
3. ``gan_face.training.finetune`` with its defaults, timed.
4. Base and fine-tuned model scored on the rest of the new source and on the other sources: the test half of
   the held-out sources and the identity-disjoint validation split of the training sources, in the clean and
   avatar conditions. Prints AUC per source before and after.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gan_face._runtime import tune_allocator
from gan_face.card import ModelCard
from gan_face.detector import Detector
from gan_face.training.datasets import index_tree
from gan_face.training.finetune import FinetuneSettings, finetune
from gan_face.training.fitting import fit_on_rows
from gan_face.training.metrics import evaluation_report
from gan_face.training.scoring import score_samples
from gan_face.training.splits import split_by_identity

CONDITIONS = ("clean", "avatar")


def link_folder(samples, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for sample in samples:
        target = folder / f"{sample.source.replace('/', '_')}__{Path(sample.path).name}"
        target.symlink_to(Path(sample.path).resolve())


def auc_table(detector: Detector, samples) -> dict:
    rows = score_samples(detector, samples, CONDITIONS, progress=False)
    report = evaluation_report(rows, detector.threshold)
    return {c: {k: v["auc"] for k, v in report[c]["by_source"].items()} for c in CONDITIONS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--base", required=True, help="base model card (its CNN must not have seen --source)")
    parser.add_argument("--splits", required=True, type=Path, help="held-out halves written by scripts/train.py")
    parser.add_argument("--source", default="fake/boredhumans_basemax")
    parser.add_argument("--n-fake", type=int, default=200)
    parser.add_argument("--n-real", type=int, default=300)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "gan-face-simulation")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-only", action="store_true", help="stop after timing the fine-tuning (steps 1-3)")
    parser.add_argument(
        "--keep-fusion", action="store_true", help="skip step 1 (the base keeps its fusion): for timing runs only"
    )
    args = parser.parse_args()
    tune_allocator()

    base = ModelCard.load(args.base)
    held_out = set(base.sections["training"]["held_out_sources"])
    if args.source not in held_out:
        parser.error(f"{args.source} was used to train {args.base}: pick a held-out source")
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    rng = np.random.default_rng(args.seed)
    calibration = index_tree(args.splits / "calibration")
    test = index_tree(args.splits / "test")

    # 1. a base whose fusion never saw the new source
    base_card = args.work / "base.json"
    base.save(base_card)  # its weights stay where they are, named by absolute path
    others = [s for s in calibration if s.source != args.source]
    if not args.keep_fusion:
        fusion, threshold = fit_on_rows(
            score_samples(Detector(weights=base_card), others, CONDITIONS, progress=False),
            features=base.fusion.features,
        )
        base.replace(fusion=fusion, threshold=threshold).save(base_card)

    # 2. the user's folders
    new_fakes = [s for s in calibration if s.source == args.source]
    reals = [s for s in calibration if s.label == 0]
    fakes = [new_fakes[i] for i in sorted(rng.permutation(len(new_fakes))[: args.n_fake])]
    real_pick = [reals[i] for i in sorted(rng.permutation(len(reals))[: args.n_real])]
    link_folder(fakes, args.work / "user" / "fake")
    link_folder(real_pick, args.work / "user" / "real")

    # 3. fine-tune, timed
    start, cpu_start = time.time(), time.process_time()
    report = finetune(
        args.work / "user" / "real",
        args.work / "user" / "fake",
        args.work / "adapted.safetensors",
        base=base_card,
        settings=FinetuneSettings(seed=args.seed),
        cache_dir=args.work / "cache",
    )
    minutes = (time.time() - start) / 60
    cpu_share = (time.process_time() - cpu_start) / max(time.time() - start, 1e-9)
    print(report.table())
    print(
        f"fine-tuning took {minutes:.1f} min, using {cpu_share:.2f} CPUs on average "
        f"(torch threads after it: {torch.get_num_threads()})"
    )
    if args.time_only:
        return 0

    # 4. before and after, on the rest of the new source and on the other sources
    used = {s.path for s in fakes}
    rest = [s for s in calibration + test if s.source == args.source and s.path not in used]
    trainable = [s for s in index_tree(args.data) if s.source not in held_out]
    _, validation = split_by_identity(trainable, 0.15, seed=0)  # the base's own validation split
    step = max(1, len(validation) // 600)
    evaluation = [s for s in test if s.source != args.source] + validation[::step] + rest
    results = {}
    for name, card in (("before", base_card), ("after", args.work / "adapted.json")):
        results[name] = auc_table(Detector(weights=card), evaluation)
    sources = list(results["before"]["clean"])
    print(
        f"\n{'source (vs all reals / fakes)':48s}"
        + "".join(f"{c + ' ' + w:>16s}" for c in CONDITIONS for w in ("before", "after"))
    )
    for source in sources:
        cells = "".join(f"{results[w][c][source]:16.4f}" for c in CONDITIONS for w in ("before", "after"))
        print(f"{source:48s}{cells}")
    payload = {
        "source": args.source,
        "n_fake": len(fakes),
        "n_real": len(real_pick),
        "minutes": round(minutes, 2),
        "finetune_report": report.before_after,
        "auc": results,
        "n_rest_of_source": len(rest),
        "n_evaluation": len(evaluation),
    }
    if args.json:
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
