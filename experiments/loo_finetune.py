"""A new diffusion generator appears: fine-tune the leave-one-out fold that never saw it on 200 of its faces.

    python scripts/leave_one_out.py ../shared/data --work /tmp/gan-face-loo ...       # the folds, first
    python experiments/loo_finetune.py ../shared/data --work /tmp/gan-face-loo --family sd3 \\
        --base models/gan-face-v2.json [--n-fake 200] [--n-real 300] [--distill-weight 1.0] \\
        [--freeze-blocks 4] [--json result.json]

The user's path when a generator appears is ``gan-face finetune`` on a folder of its faces and a folder of real
photos; this measures it on a fold's model, the only model that never saw the family:

1. The fold's CNN (``WORK/FAMILY/best.safetensors``) in a card otherwise like ``--base`` (the fine-tune refits
   the CNN's term of the fusion and its calibration; the CNN is what is measured here).
2. User folders: ``--n-fake`` faces of the family (seeded draw) and ``--n-real`` real photos of the training
   sources (never of the evaluation reals).
3. ``gan_face.training.finetune`` with its defaults, or the distillation weight and frozen blocks given (the two
   knobs that trade the new family's gain against the others' loss).
4. Before and after, the CNN's logit alone on the fold's evaluation pool, as ``leave_one_out.py`` scores it: the
   rest of the family and every other family against the real sources no fold trains on, in every condition.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from gan_face._runtime import tune_allocator
from gan_face.card import CnnConfig, ModelCard
from gan_face.training.conditions import CONDITIONS
from gan_face.training.datasets import index_tree
from gan_face.training.finetune import FinetuneSettings, finetune
from gan_face.training.folds import EVALUATION_REALS, FAMILIES
from gan_face.training.loop import predict_pool
from gan_face.training.metrics import ranking_metrics
from gan_face.training.network import load_torch_cnn
from gan_face.training.pools import ConditionVariants, build_pool
from gan_face.training.splits import write_split_tree


def family_auc(logits: np.ndarray, pool, exclude: set[str]) -> dict:
    """Per condition and family: AUC and TPR at 1% FPR of the family's fakes against the evaluation reals."""
    sources = np.array([s.source for s in pool.samples])
    keep = pool.usable & ~np.isin([s.path for s in pool.samples], list(exclude))
    reals = np.isin(sources, EVALUATION_REALS) & keep
    result: dict = {}
    for k, condition in enumerate(CONDITIONS):
        for family, members in FAMILIES.items():
            fakes = np.isin(sources, members) & keep
            if fakes.any():
                chosen = fakes | reals
                m = ranking_metrics(fakes[chosen].astype(int), logits[chosen, k])
                result.setdefault(condition, {})[family] = {**m, "n_fake": int(fakes.sum())}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--work", type=Path, required=True, help="leave_one_out.py's --work folder")
    parser.add_argument("--family", required=True, choices=sorted(FAMILIES))
    parser.add_argument("--base", type=Path, required=True, help="card whose settings the fold's CNN gets")
    parser.add_argument("--cache", default="/tmp/gan-face-cache")
    parser.add_argument("--n-fake", type=int, default=200)
    parser.add_argument("--n-real", type=int, default=300)
    parser.add_argument("--distill-weight", type=float, default=FinetuneSettings.distill_weight)
    parser.add_argument("--freeze-blocks", type=int, default=FinetuneSettings.freeze_blocks)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    tune_allocator()

    samples = index_tree(args.data)
    rng = np.random.default_rng(args.seed)
    family = [s for s in samples if s.source in FAMILIES[args.family]]
    reals = [s for s in samples if s.label == 0 and s.source not in EVALUATION_REALS]
    chosen_fakes = [family[i] for i in sorted(rng.choice(len(family), args.n_fake, replace=False))]
    chosen_reals = [reals[i] for i in sorted(rng.choice(len(reals), args.n_real, replace=False))]

    work = Path(tempfile.mkdtemp(prefix="gan-face-loo-finetune-"))
    base = ModelCard.load(args.base).with_weights(args.work / args.family / "best.safetensors")
    base = base.with_sections(training={"note": f"leave-one-out fold without {args.family}"}, evaluation=None)
    base.save(work / "fold.json")
    write_split_tree(chosen_fakes, args.data, work / "fake")  # the user's folders (read recursively)
    write_split_tree(chosen_reals, args.data, work / "real")
    settings = FinetuneSettings(
        distill_weight=args.distill_weight, freeze_blocks=args.freeze_blocks, seed=args.seed, progress=True
    )
    report = finetune(work / "real", work / "fake", work / "tuned.safetensors", base=work / "fold.json",
                      settings=settings, cache_dir=args.cache)  # fmt: skip

    evaluated = [s for s in samples if s.label == 1 or s.source in EVALUATION_REALS]
    config = CnnConfig(input_size=base.face.config.input_size)
    pool = build_pool(
        evaluated, args.cache, config, variants=len(CONDITIONS), make_variant=ConditionVariants(CONDITIONS),
        spec={"kind": "conditions", "conditions": list(CONDITIONS)}, workers=torch.get_num_threads(),
    )  # fmt: skip
    used = {s.path for s in chosen_fakes}
    result = {
        "family": args.family,
        "n_fake": args.n_fake,
        "n_real": args.n_real,
        "n_rest": len(family) - args.n_fake,
        "settings": {
            "distill_weight": args.distill_weight,
            "freeze_blocks": args.freeze_blocks,
            "seed": args.seed,
        },
        "minutes": report.minutes,
    }
    for when, card_path in (("before", work / "fold.json"), ("after", work / "tuned.json")):
        card = ModelCard.load(card_path)
        result[when] = family_auc(predict_pool(load_torch_cnn(card), pool, card.face.config), pool, used)
    for condition in CONDITIONS:
        print(f"== {condition}: AUC before -> after (TPR at 1% FPR)")
        for name, before in result["before"][condition].items():
            after = result["after"][condition][name]
            print(
                f"  {name:18s} {before['auc']:.4f} -> {after['auc']:.4f}   "
                f"({before['tpr_at_1pct_fpr']:.3f} -> {after['tpr_at_1pct_fpr']:.3f}; n fake {after['n_fake']})"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
