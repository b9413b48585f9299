"""The clip view's leave-one-family-out matrix over cached CLIP features: each generator family (and the real
sources processed with it) left out of the head's fit in turn, then that family scored against real sources no
fold fits on, per condition, with bootstrap intervals. A fold is a linear fit over cached features: seconds.

    python scripts/clip_matrix.py ../shared/data --encoder WORK/clip12.safetensors --work WORK
        [--size 160] [--view frame] [--conditions avatar,clean,laundered,cropped,gray] [--blocks 0-11]
        [--components 256] [--shrinkage 0.1] [--per-source N] [--variants ffhq,retouch,reframe]
        [--card CARD --evidence-rows ROWS... [--second-look]] [-o matrix.json]

The crops (``training.pools``) and features (``training.features``) are cached under ``--work`` and reused by
every later run (and by ``scripts/train_clip_head.py``); ``--blocks`` and the head's settings cost a refit only.
The folds and their metrics are ``gan_face.training.clip_matrix``; this script parses the options and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from gan_face._runtime import tune_allocator
from gan_face.card import DEFAULT_GROUP_SIZE, ModelCard
from gan_face.training.clip_matrix import (
    EVALUATION_REALS,
    SecondLookFolds,
    even_spread,
    matrix_line,
    parse_blocks,
    run_matrix,
)
from gan_face.training.datasets import index_tree
from gan_face.training.features import condition_features, extra_copies, variant_features
from gan_face.training.scoring import load_rows
from gan_face.training.second_look import head_sample
from gan_face.training.splits import V3_HOLDOUT


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
    parser.add_argument(
        "--variants",
        default="",
        help="extra copies each fold also fits on, as train_clip_head.py (ffhq,retouch,reframe)",
    )
    parser.add_argument(
        "--second-look",
        action="store_true",
        help="with --card: also give each fold the card's second look (avatar), its head refitted without the "
        "family on the features at the second look's size (cached under --work; the held-out sources and the "
        "other generated faces are computed the first time)",
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
    extra = None
    variants = [name for name in args.variants.split(",") if name]
    if variants:
        options = {"input_size": args.size, "view": args.view, "group_size": args.group_size}
        copies = extra_copies(samples, usable, variants, args.encoder, args.work, **options)
        kept = np.concatenate([indices for _, _, indices in copies])
        extra = (
            np.concatenate([tokens for _, tokens, _ in copies]),
            np.array([samples[i].label for i in kept]),
            np.array([samples[i].source for i in kept]),
        )
    fused_with = second_look = None
    if args.card:
        card = ModelCard.load(args.card)
        fused_with = (card.fusion, [r for p in args.evidence_rows for r in load_rows(p)], card.threshold)
        if args.second_look:
            if args.per_source:
                parser.error("--second-look reads the whole data set's indices: leave --per-source out")
            second_look = second_look_folds(card, samples, args.encoder, args.work)
    report = {
        "data": str(args.data),
        "size": args.size,
        "view": args.view,
        "conditions": conditions,
        "components": args.components,
        "shrinkage": args.shrinkage,
        "per_source": args.per_source,
        "variants": variants,
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
            extra,
            second_look,
        )
        report["runs"][block_text] = matrix
        print(f"\nblocks {block_text} ({time.time() - started:.0f} s)")
        for condition in conditions:
            print(f"  {condition:9s} " + matrix_line(matrix, condition))
    if args.output:
        args.output.write_text(json.dumps(report, indent=1))
    return 0


def second_look_folds(card: ModelCard, samples, encoder: str, work: Path) -> SecondLookFolds:
    """The card's second look for the matrix: the avatar features at its size of the images its head fitted on
    (the same cache as ``scripts/fit_second_look.py``) and of every other image a fold may score (the held-out
    sources, every generated face), with the head's settings from the card."""
    if card.second_look is None:
        raise SystemExit(f"{card.path}: this card has no second look")
    config, head = card.second_look.clip.config, card.sections["second_look_fit"]["head"]
    options = {"input_size": config.input_size, "view": config.view, "group_size": config.group_size}
    trainable = head_sample(samples, head["per_source_at_most"])
    scored = sorted(
        i for i, s in enumerate(samples) if (s.source in V3_HOLDOUT or s.label == 1) and i not in set(trainable)
    )
    tokens = np.zeros((len(samples), 12, 768), np.float16)
    usable = np.zeros(len(samples), bool)
    for only in (trainable, scored):
        found, ok = condition_features(samples, ["avatar"], encoder, work, only=only, **options)
        tokens[only], usable[only] = np.asarray(found)[only, 0], ok[only]
    mask = np.zeros(len(samples), bool)
    mask[trainable] = True
    copies = []
    for name in head.get("extra_copies", ()):  # as scripts/fit_second_look.py --variants fitted them
        found_tokens, found = variant_features([samples[i] for i in trainable], name, encoder, work, **options)
        copies.append((np.asarray(found_tokens)[found], np.asarray(trainable)[found]))
    return SecondLookFolds(tokens, usable, mask, config.blocks, head["components"], head["shrinkage"],
                           card.second_look, card.threshold, copies)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
