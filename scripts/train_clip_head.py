"""Fit the clip view's linear head on cached CLIP features and write a model card that has it.

    python scripts/train_clip_head.py ../shared/data --study-encoder WORK/clip12.safetensors --work WORK
        --base models/gan-face-v2.json --encoder models/clip-vit-b16.safetensors -o models/gan-face-v3.json
        [--size 160] [--view frame] [--blocks 0-11] [--conditions clean,avatar,laundered,cropped,gray]
        [--components 256] [--shrinkage 0.1] [--variants ffhq,retouch,reframe]

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
import functools
import sys
from pathlib import Path

import numpy as np

from gan_face._math import sigmoid
from gan_face._runtime import tune_allocator
from gan_face.card import DEFAULT_GROUP_SIZE, ClipConfig, ClipNetwork, ModelCard, file_sha256
from gan_face.training.clip_head import fit_stats, head_logits, head_tensors, lda_head, source_weights
from gan_face.training.clip_matrix import parse_blocks
from gan_face.training.conditions import CONDITIONS
from gan_face.training.datasets import index_tree, manifest_digest
from gan_face.training.features import condition_features, extra_copies, head_inputs
from gan_face.training.scoring import load_rows, save_rows
from gan_face.training.splits import V3_HOLDOUT, held_out_half


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument(
        "--study-encoder", required=True, help="the 12-block encoder the feature cache was made with"
    )
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--base", required=True, help="the card whose CNNs, detector and fusion the new one keeps")
    parser.add_argument("--encoder", required=True, type=Path, help="the encoder file the new card names")
    parser.add_argument("-o", "--output", required=True, type=Path, help="the new card (.json)")
    parser.add_argument("--name", help="the model's name (default: the card's file name)")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--group-size", type=int, default=DEFAULT_GROUP_SIZE, help="int8 activation group")
    parser.add_argument("--view", default="frame", choices=("frame", "face"))
    parser.add_argument("--blocks", default="0-11")
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--components", type=int, default=256)
    parser.add_argument("--shrinkage", type=float, default=0.1)
    parser.add_argument(
        "--variants",
        default="",
        help="comma-separated extra copies of every training image, both classes, to fit on too: 'ffhq' (an "
        "FFHQ-style re-crop: framing is not evidence, real photos aligned the FFHQ way must not look generated), "
        "'retouch' (a retouched copy: polish is not evidence, training.retouch), 'reframe' (a headshot cut at a "
        "random width around the face: how a shot is cut is not evidence)",
    )
    parser.add_argument(
        "--exclude",
        default="",
        help="comma-separated sources also left out of the fit (to "
        "simulate a generator the model has never seen, for scripts that measure fine-tuning)",
    )
    parser.add_argument(
        "--evidence-rows",
        type=Path,
        nargs="*",
        default=(),
        help="rows of the base model's evidence (training.scoring.score_jobs, seeded by the data "
        "set's index) to which the new head's clip score is added from the cache; a file that does not exist is "
        "made first: the base card without its clip view scores the held-out sources under every condition",
    )
    parser.add_argument("--rows-out", type=Path, help="where those rows go, each marked with its half")
    args = parser.parse_args()
    tune_allocator()
    from safetensors.numpy import save_file

    blocks = parse_blocks(args.blocks)
    conditions = args.conditions.split(",")
    samples = index_tree(args.data)
    # every feature of the head and of the evidence rows comes from the same cache and encoder settings
    cached_features = functools.partial(
        condition_features,
        samples,
        encoder_path=args.study_encoder,
        cache_dir=args.work,
        input_size=args.size,
        view=args.view,
        group_size=args.group_size,
    )
    features, usable = cached_features(conditions)
    sources = np.array([s.source for s in samples])
    excluded = [x for x in args.exclude.split(",") if x]
    train = usable & ~np.isin(sources, list(V3_HOLDOUT) + excluded)
    rows = np.repeat(np.flatnonzero(train), len(conditions))
    variants = np.tile(np.arange(len(conditions)), int(train.sum()))
    x = head_inputs(np.asarray(features)[rows, variants], blocks)
    y = np.array([samples[i].label for i in rows])
    row_sources = sources[rows]
    variants = [name for name in args.variants.split(",") if name]
    options = {"input_size": args.size, "view": args.view, "group_size": args.group_size}
    for name, tokens, indices in extra_copies(samples, usable, variants, args.study_encoder, args.work, **options):
        kept = train[indices]  # masked here: --exclude leaves a source out of the fit, not out of the cache
        x = np.concatenate([x, head_inputs(tokens[kept], blocks)])
        y = np.concatenate([y, [samples[i].label for i in indices[kept]]])
        row_sources = np.concatenate([row_sources, sources[indices[kept]]])
        print(f"{name} copies: {kept.sum()} rows")
    stats = fit_stats(x, y, source_weights(row_sources, y), args.components, sources=row_sources)
    tensors = head_tensors(stats, args.shrinkage)
    fitted = head_logits(stats, x, args.shrinkage)
    print(
        f"head fitted on {train.sum()} images x {len(conditions)} conditions ({len(x)} rows, "
        f"{x.shape[1]} features); training AUC {_auc(y, fitted):.4f}"
    )

    base = ModelCard.load(args.base)
    head_path = args.output.with_name(args.output.stem + "-clip-head.safetensors")
    head_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: np.ascontiguousarray(v) for k, v in tensors.items()},
        str(head_path),
        metadata={"what": "gan-face clip view head (shrunk LDA) and its sufficient statistics"},
    )
    clip = ClipNetwork(
        ClipConfig(input_size=args.size, blocks=tuple(blocks), view=args.view, group_size=args.group_size),
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
            **({"also_left_out": excluded} if excluded else {}),
            "conditions": conditions,
            "n_images": int(train.sum()),
            "ffhq_variants": "ffhq" in variants,
            "extra_copies": variants,
            "head": {
                "kind": "shrunk LDA on the leading principal directions of the standardised CLS tokens",
                "components": args.components,
                "shrinkage": args.shrinkage,
                "source_weighting": "every source weighs the same within its class",
            },
        }
    )
    card.save(args.output)
    print(f"{args.output}: clip view on blocks {blocks} at {args.size} px ({args.view}); head {head_path.name}")
    if args.evidence_rows:
        rows = [row for path in args.evidence_rows if path.exists() for row in load_rows(path)]
        missing = [path for path in args.evidence_rows if not path.exists()]
        if missing:
            rows += score_base_evidence(base, samples, conditions, args.work, rows, missing[0])
        by_condition = {c: (features[:, k], usable) for k, c in enumerate(conditions)}
        for condition in sorted(
            {r["condition"] for r in rows} - set(conditions)
        ):  # not fitted on: just these rows
            wanted = sorted({r["index"] for r in rows if r["condition"] == condition})
            extra, extra_usable = cached_features([condition], only=wanted)
            by_condition[condition] = (extra[:, 0], extra_usable)
        add_clip_scores(rows, by_condition, stats, args.shrinkage, blocks, samples)
        save_rows(rows, args.rows_out)
        print(f"{args.rows_out}: {len(rows)} rows with the clip score, marked by half")
    return 0


def score_base_evidence(base: ModelCard, samples, conditions, work: Path, have_rows, missing: Path) -> list[dict]:
    """Write to ``missing`` (and return) the rows ``have_rows`` lack, scored by ``base`` without its clip view (the
    evidence the new clip score joins): the held-out sources under every condition (fusion and test half) and the
    other generated faces under the head's conditions (the fused figures of the leave-one-family-out matrix)."""
    from gan_face._runtime import configure_threads
    from gan_face.detector import Detector
    from gan_face.training.scoring import score_jobs

    have = {(r["index"], r["condition"]) for r in have_rows}
    wanted = [(i, c) for c in CONDITIONS for i, s in enumerate(samples) if s.source in V3_HOLDOUT]
    other_fakes = [i for i, s in enumerate(samples) if s.label == 1 and s.source not in V3_HOLDOUT]
    wanted += [(i, c) for c in conditions for i in other_fakes]
    jobs = [job for job in wanted if job not in have]
    without_clip = base.replace(clip=None).save(work / f"{base.name}-without-clip.json")
    detector = Detector(without_clip.path, threads=configure_threads())
    scored = score_jobs(detector, samples, jobs)
    save_rows(scored, missing)
    print(f"{missing}: {len(jobs)} rows of {base.name}'s evidence without its clip view")
    return scored


def add_clip_scores(rows, by_condition, stats, shrinkage, blocks, samples) -> None:
    """Each row's ``clip`` score from the cached features of its image and condition (``by_condition``:
    condition -> (features, usable); the runtime's encoder on the same crop), and its ``half`` of the held-out
    sources (calibration, test; ``None`` outside them)."""
    half = {s.path: name for name in ("calibration", "test") for s in held_out_half(samples, name)}
    coef_intercept = lda_head(stats, shrinkage)
    for row in rows:
        i = row["index"]
        features, usable = by_condition[row["condition"]]
        if samples[i].path != row["sample"].path:
            raise SystemExit(f"row {i} is {row['sample'].path}, the data set's image {i} is {samples[i].path}")
        if usable[i] and row["scores"].get("cnn") is not None:
            logit = head_logits(stats, head_inputs(features[i : i + 1], blocks), shrinkage, coef_intercept)[0]
            row["scores"]["clip"] = float(sigmoid(logit))
        else:
            row["scores"]["clip"] = None
        row["half"] = half.get(row["sample"].path)


def _auc(labels, scores) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


if __name__ == "__main__":
    sys.exit(main())
