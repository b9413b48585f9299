"""Give a model card a second look (:class:`gan_face.card.SecondLook`): a clip head at a higher resolution for the
images its first look leaves in the band below the threshold, the fusion that decides them, and the figures.

    python scripts/fit_second_look.py ../shared/data --card models/gan-face-v4.json \\
        --study-encoder WORK/clip12.safetensors --encoder models/clip-vit-b16.safetensors --work WORK \\
        --calibration-rows calibration.jsonl --test-rows test.jsonl --band-from 0.3 [--size 224] \\
        [--blocks 7-10] [--per-source 300] [--variants retouch] [--rows-out rows.jsonl] [--log LOG.json]
        [--dry-run]

1. The head: shrunk LDA, as the clip view's (:mod:`gan_face.training.clip_head`), on the CLS tokens of the encoder
   at ``--size`` of every source outside ``V3_HOLDOUT`` (at most ``--per-source`` images each, avatar condition),
   cached like the clip view's features (:mod:`gan_face.training.features`), and ``--variants``' extra copies of
   the same images (``retouch``: polish is not evidence).
2. The rows: the card's first look on the held-out sources (``scripts/evaluate.py --held-out-half ...
   --save-rows``, each half, every condition). Those whose first likelihood is at least ``--features-from``
   (default ``--band-from``) and below the threshold get the encoder at ``--size`` on the same conditioned image
   (seeded by the image's index, as scoring was); the ones in the band get the ``"second_look"`` score.
3. The fusion (:mod:`gan_face.training.second_look`), fitted on the calibration half's band and placed so the
   card's threshold keeps its rule (``--max-fpr`` per condition, ``--max-source-fpr`` per real source) over the
   calibration half. The card's ``second_look`` and ``second_look_fit`` sections are written (unless
   ``--dry-run``). The figures of both halves, first look against both looks, with the share of images that took
   the second look (its cost), are printed and go into the experiment log ``--log``. ``--rows-out``: both halves'
   rows as the runtime would score them, for ``scripts/evaluate.py --from-rows`` and ``scripts/fit_answers.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from gan_face._math import sigmoid
from gan_face._runtime import tune_allocator
from gan_face.card import ClipConfig, ClipNetwork, ModelCard, SecondLook, file_sha256
from gan_face.training.clip_head import fit_stats, head_logits, head_tensors, source_weights
from gan_face.training.clip_matrix import parse_blocks
from gan_face.training.datasets import index_tree, manifest_digest
from gan_face.training.features import condition_features, head_inputs, variant_features
from gan_face.training.metrics import ranking_metrics
from gan_face.training.scoring import load_rows, save_rows
from gan_face.training.second_look import (
    SECOND_LOOK,
    final_likelihoods,
    first_likelihoods,
    fit_second_fusion,
    head_sample,
    in_band,
    place_at_threshold,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--card", required=True, type=Path, help="the card to add it to (in place)")
    parser.add_argument("--study-encoder", required=True, help="the 12-block encoder of the feature cache")
    parser.add_argument("--encoder", required=True, type=Path, help="the encoder file the card names")
    parser.add_argument("--work", required=True, type=Path, help="cache folder for faces, crops and features")
    parser.add_argument("--calibration-rows", required=True, type=Path)
    parser.add_argument("--test-rows", required=True, type=Path)
    parser.add_argument("--band-from", required=True, type=float, help="first likelihoods from here get it")
    parser.add_argument("--features-from", type=float, help="compute features from here (default --band-from)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--blocks", default="7-10")
    parser.add_argument("--components", type=int, default=512)
    parser.add_argument("--shrinkage", type=float, default=0.1)
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--per-source", type=int, default=300, help="training images per source at most")
    parser.add_argument("--variants", default="", help="extra copies to fit on too, as train_clip_head.py's")
    parser.add_argument("--max-fpr", type=float, default=0.005)
    parser.add_argument("--max-source-fpr", type=float, default=0.01)
    parser.add_argument("--rows-out", type=Path)
    parser.add_argument("--log", type=Path, help="the card's experiment log, where the figures go")
    parser.add_argument("--dry-run", action="store_true", help="print the figures, write nothing")
    args = parser.parse_args()
    tune_allocator()
    from safetensors.numpy import save_file

    card = ModelCard.load(args.card)
    if card.clip is None:
        raise SystemExit(f"{args.card}: a second look needs a card with a clip view")
    blocks = parse_blocks(args.blocks)
    samples = index_tree(args.data)
    options = {"input_size": args.size, "group_size": args.group_size}
    cached = lambda conditions, only: condition_features(  # noqa: E731  one cache, one encoder setting
        samples, conditions, args.study_encoder, args.work, only=only, **options
    )

    # 1. the head
    sampled = head_sample(samples, args.per_source)
    tokens, usable = cached(["avatar"], sampled)
    train = [i for i in sampled if usable[i]]
    x = head_inputs(np.asarray(tokens)[train, 0], blocks)
    y = np.array([samples[i].label for i in train])
    sources = np.array([samples[i].source for i in train])
    variants = [name for name in args.variants.split(",") if name]
    for name in variants:  # extra copies of the same images, both classes (training.pools.extra_variants)
        copies, found = variant_features(
            [samples[i] for i in sampled], name, args.study_encoder, args.work, **options
        )
        kept = [i for i, ok in zip(sampled, found) if ok]
        x = np.concatenate([x, head_inputs(np.asarray(copies)[found], blocks)])
        y = np.concatenate([y, [samples[i].label for i in kept]])
        sources = np.concatenate([sources, [samples[i].source for i in kept]])
    stats = fit_stats(x, y, source_weights(sources, y), args.components, sources=sources)
    print(f"second-look head: {len(train)} images at {args.size} px (+ copies: {variants}), blocks {blocks}")

    # 2. the rows, with the second-look score where the first look leaves them in the band
    halves = {"calibration": load_rows(args.calibration_rows), "test": load_rows(args.test_rows)}
    for half, rows in halves.items():
        for row in rows:
            if samples[row["index"]].path != row["sample"].path:
                raise SystemExit(f"{half} row {row['index']} is {row['sample'].path}, not the data set's image")
    everything = [r for rows in halves.values() for r in rows]
    first_all = first_likelihoods(card.fusion, everything)
    wanted = in_band(first_all, args.features_from or args.band_from, card.threshold)
    band_all = in_band(first_all, args.band_from, card.threshold)
    for condition in sorted({r["condition"] for r in everything}):
        only = sorted({r["index"] for r, w in zip(everything, wanted) if w and r["condition"] == condition})
        features, found = cached([condition], only)
        logits = head_logits(stats, head_inputs(np.asarray(features)[only, 0], blocks), args.shrinkage)
        by_index = {i: float(sigmoid(z)) for i, z, ok in zip(only, logits, found[only]) if ok}
        for row, looked in zip(everything, band_all):
            if row["condition"] == condition:
                row["scores"].pop(SECOND_LOOK, None)
                if looked and row["index"] in by_index:
                    row["scores"][SECOND_LOOK] = by_index[row["index"]]

    # 3. the fusion, on the calibration half's band, placed at the card's threshold
    calibration = halves["calibration"]
    first = first_likelihoods(card.fusion, calibration)
    band = in_band(first, args.band_from, card.threshold)
    second = fit_second_fusion(calibration, band, card.fusion.features)
    second = place_at_threshold(
        second, calibration, first, band, card.threshold, args.max_fpr, args.max_source_fpr
    )
    print("second fusion: " + ", ".join(f"{n} {w:.2f}" for n, w in zip(second.features, second.weights)))
    report = {half: summary(rows, card, second, args.band_from) for half, rows in halves.items()}
    for half, entry in report.items():
        print(f"\n{half} half: first look -> both looks (share that took the second look)")
        for condition, m in entry.items():
            print(
                f"  {condition:10s} AUC {m['first']['auc']:.4f} -> {m['final']['auc']:.4f}  TPR@1% "
                f"{m['first']['tpr_at_1pct_fpr']:.3f} -> {m['final']['tpr_at_1pct_fpr']:.3f}  caught "
                f"{m['first']['caught']:.1%} -> {m['final']['caught']:.1%}  reals flagged "
                f"{m['first']['reals_flagged']:.2%} -> {m['final']['reals_flagged']:.2%} (worst source "
                f"{m['final']['worst_real_source']})  second look: reals {m['second_look_share']['real']:.1%}, "
                f"generated {m['second_look_share']['generated']:.1%}"
            )
    if args.rows_out:
        for half, rows in halves.items():
            final = final_likelihoods(first_likelihoods(card.fusion, rows), np.ones(len(rows), bool), second, rows)
            for row, likelihood in zip(rows, final):
                row["likelihood"], row["half"] = (None if np.isnan(likelihood) else float(likelihood)), half
        save_rows(everything, args.rows_out)
        print(f"{args.rows_out}: {len(everything)} rows as the runtime scores them")
    if args.dry_run:
        return 0

    head_path = args.card.with_name(args.card.stem + "-second-look-head.safetensors")
    save_file(
        {k: np.ascontiguousarray(v) for k, v in head_tensors(stats, args.shrinkage).items()},
        str(head_path),
        metadata={"what": "gan-face second look: clip head (shrunk LDA) at a higher resolution"},
    )
    os.chmod(head_path, 0o644)  # a shipped file, readable by all (safetensors writes it owner-only)
    config = ClipConfig(input_size=args.size, blocks=tuple(blocks), view="frame", group_size=args.group_size)
    network = ClipNetwork(config, args.encoder.resolve(), head_path.resolve(), file_sha256(args.encoder),
                          file_sha256(head_path))  # fmt: skip
    fit = {
        "data_manifest_sha256": manifest_digest([args.data]),
        "head": {
            "train_sources": sorted(set(sources)),
            "n_images": len(train),
            "per_source_at_most": args.per_source,
            "conditions": ["avatar"],
            "extra_copies": variants,
            "components": args.components,
            "shrinkage": args.shrinkage,
        },
        "band": f"first likelihood in [{args.band_from}, threshold {card.threshold:.4f})",
        "fusion": "logistic, classes weighted equally, on the calibration half's band; intercept shifted so that "
        f"the threshold keeps the rule (at most {args.max_fpr:.1%} of real photos per condition, "
        f"{args.max_source_fpr:.0%} of each real source of 100+) over the whole calibration half",
        "second_look_share_test_half": {c: m["second_look_share"] for c, m in report["test"].items()},
    }
    card = card.replace(second_look=SecondLook(network, second, args.band_from)).with_sections(second_look_fit=fit)
    card.save(args.card)
    if args.log:  # both halves' figures, first look against both looks, beside the card (not installed)
        log = json.loads(args.log.read_text()) if args.log.exists() else {"model": card.name}
        log["second_look"] = {**fit, "figures": report, "command": " ".join(sys.argv)}
        args.log.write_text(json.dumps(log, indent=1) + "\n")
    print(f"{args.card}: second look at {args.size} px from first likelihood {args.band_from}; {head_path.name}")
    return 0


def summary(rows, card: ModelCard, second, band_from: float) -> dict:
    """Per condition: the first look's figures and both looks' (AUC, TPR at 1% FPR, caught and real photos
    flagged at the threshold, the real source flagged most), and the share of each class that took the second
    look."""
    first = first_likelihoods(card.fusion, rows)
    band = in_band(first, band_from, card.threshold)
    took = np.array([b and r["scores"].get(SECOND_LOOK) is not None for r, b in zip(rows, band)])
    final = final_likelihoods(first, band, second, rows)
    labels = np.array([r["sample"].label for r in rows])
    conditions = np.array([r["condition"] for r in rows])
    sources = np.array([r["sample"].source for r in rows])
    result = {}
    for condition in dict.fromkeys(conditions):
        chosen = (conditions == condition) & ~np.isnan(first)
        entry = {}
        for name, values in (("first", first), ("final", final)):
            y, s = labels[chosen], values[chosen]
            m = ranking_metrics(y, s)
            flagged = s >= card.threshold
            by_source = {src: float(flagged[(y == 0) & (sources[chosen] == src)].mean())
                         for src in np.unique(sources[chosen][y == 0])}  # fmt: skip
            worst = max(by_source, key=by_source.get)
            entry[name] = {
                "auc": round(m["auc"], 4),
                "tpr_at_1pct_fpr": round(m["tpr_at_1pct_fpr"], 4),
                "caught": round(float(flagged[y == 1].mean()), 4),
                "reals_flagged": round(float(flagged[y == 0].mean()), 4),
                "worst_real_source": f"{worst} {by_source[worst]:.1%}",
            }
        entry["second_look_share"] = {
            kind: round(float(took[chosen & (labels == label)].mean()), 4)
            for kind, label in (("real", 0), ("generated", 1))
        }
        result[condition] = entry
    return result


if __name__ == "__main__":
    sys.exit(main())
