"""Fit the clip view's linear head on cached CLIP features and write a model card that has it.

    python scripts/train_clip_head.py ../shared/data --study-encoder WORK/clip12.safetensors --work WORK
        --base models/gan-face-v2.json --encoder models/clip-vit-b16.safetensors -o models/gan-face-v3.json
        [--size 160] [--view frame] [--blocks 0-11] [--conditions clean,avatar,laundered,cropped,gray]
        [--components 256] [--shrinkage 0.1]

The head fits on every source outside ``V3_HOLDOUT`` (the held-out sources calibrate and test the model), each
image under every condition (JPEG, resizing, crops, grayscale: the histories a profile photo goes through),
sources weighed equally within each class. The features come from the cache ``scripts/clip_matrix.py`` fills
(the same crops and encoder: ``--study-encoder`` is the 12-block file the studies use; ``--encoder``, the file
the card will name, must compute the same blocks). The card is the base card with a ``clip`` section (encoder and
head files with their sha256) and the base's fusion: refit it with ``scripts/fit_fusion.py --features
cnn,frame,eyes,clip`` on the calibration half.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from gan_face._runtime import tune_allocator
from gan_face.card import ClipConfig, ClipNetwork, CnnConfig, ModelCard, file_sha256
from gan_face.training.clip_head import fit_stats, head_logits, head_tensors, source_weights
from gan_face.training.conditions import CONDITIONS
from gan_face.training.datasets import index_tree, manifest_digest
from gan_face.training.features import head_inputs, pool_features
from gan_face.training.pools import ConditionVariants, build_pool
from gan_face.training.splits import V3_HOLDOUT

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clip_matrix import parse_blocks  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--study-encoder", required=True, help="the 12-block encoder the feature cache was made with")
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--base", required=True, help="the card whose CNNs, detector and fusion the new one keeps")
    parser.add_argument("--encoder", required=True, type=Path, help="the encoder file the new card names")
    parser.add_argument("-o", "--output", required=True, type=Path, help="the new card (.json)")
    parser.add_argument("--name", help="the model's name (default: the card's file name)")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--view", default="frame", choices=("frame", "face"))
    parser.add_argument("--blocks", default="0-11")
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--components", type=int, default=256)
    parser.add_argument("--shrinkage", type=float, default=0.1)
    args = parser.parse_args()
    tune_allocator()
    from safetensors.numpy import save_file

    blocks = parse_blocks(args.blocks)
    conditions = args.conditions.split(",")
    samples = index_tree(args.data)
    pool = build_pool(samples, args.work, CnnConfig(input_size=args.size, view=args.view), variants=len(conditions),
                      make_variant=ConditionVariants(conditions), spec={"conditions": conditions})  # fmt: skip
    features = pool_features(pool, args.study_encoder, args.work, input_size=args.size, depth=12)
    sources = np.array([s.source for s in samples])
    train = pool.usable & ~np.isin(sources, V3_HOLDOUT)
    rows = np.repeat(np.flatnonzero(train), len(conditions))
    variants = np.tile(np.arange(len(conditions)), int(train.sum()))
    x = head_inputs(np.asarray(features)[rows, variants], blocks)
    y = np.array([samples[i].label for i in rows])
    stats = fit_stats(x, y, source_weights(sources[rows], y), args.components, sources=sources[rows])
    tensors = head_tensors(stats, args.shrinkage)
    fitted = head_logits(stats, x, args.shrinkage)
    print(f"head fitted on {train.sum()} images x {len(conditions)} conditions ({len(x)} rows, {x.shape[1]} features);"
          f" training AUC {_auc(y, fitted):.4f}")  # fmt: skip

    base = ModelCard.load(args.base)
    head_path = args.output.with_name(args.output.stem + "-clip-head.safetensors")
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(head_path),
              metadata={"what": "gan-face clip view head (shrunk LDA) and its sufficient statistics"})  # fmt: skip
    clip = ClipNetwork(
        ClipConfig(input_size=args.size, blocks=tuple(blocks), view=args.view),
        args.encoder.resolve(),
        head_path.resolve(),
        file_sha256(args.encoder),
        file_sha256(head_path),
    )
    train_sources = sorted(set(sources[train]))
    card = base.replace(name=args.name or args.output.stem, clip=clip).with_sections(
        clip_training={
            "data_manifest_sha256": manifest_digest([args.data]),
            "train_sources": train_sources,
            "held_out_sources": sorted(V3_HOLDOUT),
            "conditions": conditions,
            "n_images": int(train.sum()),
            "head": {"kind": "shrunk LDA on the leading principal directions of the standardised CLS tokens",
                     "components": args.components, "shrinkage": args.shrinkage,
                     "source_weighting": "every source weighs the same within its class"},  # fmt: skip
        }
    )
    card.save(args.output)
    print(f"{args.output}: clip view on blocks {blocks} at {args.size} px ({args.view}); head {head_path.name}")
    return 0


def _auc(labels, scores) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


if __name__ == "__main__":
    sys.exit(main())
