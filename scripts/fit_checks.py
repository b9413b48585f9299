"""Fit the weights that turn each forensic check's measurements into its score (``checks/check_weights.json``).

    python scripts/fit_checks.py ../shared/data [--holdout fake/boredhumans_basemax,...] [--per-source 300]

Measures every check's raw features on the training sources only (never the held-out ones), under the clean,
avatar, laundered and cropped conditions, fits one logistic model per check (features standardised, classes
weighted equally, each weight held to the direction the check's module allows) and writes the weights beside
the checks. Landmarks come from the face cache and are moved with each condition, as in training. Prints each
check's AUC per source and condition on what it was fitted on; the honest numbers come from scripts/evaluate.py
on held-out sources.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from importlib import resources
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from gan_face.align import Face, FaceAligner, Landmarks
from gan_face.checks import background, spectrum, symmetry
from gan_face.io import load_image
from gan_face.training.conditions import CONDITIONS, condition_with_transform
from gan_face.training.datasets import index_tree
from gan_face.training.facecache import detect_cached
from gan_face.training.fitting import fit_linear_evidence
from gan_face.training.splits import DEFAULT_HOLDOUT  # the same split as the CNN


def _spectrum(image, face):
    grey = spectrum.face_square(image, face)
    return None if grey is None else spectrum.spectrum_features(grey)


# check name: (measurement function, its module, which names the features and the sign each weight may take)
MEASURES = {
    "symmetry": (symmetry.symmetry_features, symmetry),
    "background": (background.background_features, background),
    "spectrum": (_spectrum, spectrum),
}


def measure(args, holdout: set[str]) -> list[tuple]:
    """(check, features or None, label, source, condition) for a sample of every training source."""
    rng = np.random.default_rng(args.seed)
    by_source = defaultdict(list)
    for sample in index_tree(args.data):
        if sample.source not in holdout:
            by_source[sample.source].append(sample)
    samples = []
    for source in sorted(by_source):
        chosen = rng.permutation(len(by_source[source]))[: args.per_source]
        samples += [by_source[source][i] for i in sorted(chosen)]
    faces = detect_cached([s.path for s in samples], FaceAligner(), args.cache)

    from tqdm import tqdm

    rows = []  # (check, features or None, label, source, condition)
    for index, sample in enumerate(tqdm(samples, desc="measuring", unit="img")):
        found = faces[sample.path]
        if not found:
            continue
        image = load_image(sample.path)
        points = found[0].landmarks.to_array()
        for condition in CONDITIONS:
            conditioned, matrix = condition_with_transform(image, condition, seed=index)
            moved = points @ matrix[:, :2].T + matrix[:, 2]
            face = Face(found[0].box, found[0].confidence, Landmarks.from_array(moved))
            for name, (measure_fn, _) in MEASURES.items():
                rows.append((name, measure_fn(conditioned, face), sample.label, sample.source, condition))

    if args.rows_out:
        with open(args.rows_out, "w") as handle:
            for name, features, label, source, condition in rows:
                handle.write(
                    json.dumps(
                        {
                            "check": name,
                            "features": features,
                            "label": label,
                            "source": source,
                            "condition": condition,
                        }
                    )
                    + "\n"
                )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--holdout", default=",".join(DEFAULT_HOLDOUT))
    parser.add_argument("--per-source", type=int, default=300, help="images per training source")
    parser.add_argument("--cache", default="/tmp/gan-face-cache")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="print, do not write the weights")
    parser.add_argument("--rows-out", type=Path, help="also save every measurement here (JSON lines)")
    parser.add_argument("--rows-in", type=Path, help="refit from measurements saved by --rows-out")
    args = parser.parse_args()

    holdout = set(args.holdout.split(","))
    if args.rows_in:
        rows = []
        for line in args.rows_in.read_text().splitlines():
            r = json.loads(line)
            rows.append((r["check"], r["features"], r["label"], r["source"], r["condition"]))
    else:
        rows = measure(args, holdout)
    weights_path = Path(str(resources.files("gan_face.checks").joinpath("check_weights.json")))
    fitted = {}
    for name, (_, module) in MEASURES.items():
        feature_names = module.FEATURES
        usable = [r for r in rows if r[0] == name and r[1] is not None]
        x = np.array([[r[1][f] for f in feature_names] for r in usable])
        y = np.array([r[2] for r in usable])
        evidence = fit_linear_evidence(feature_names, x, y, module.SIGNS)
        coefficients = evidence.weights
        fitted[name] = evidence.to_dict()
        scores = np.array([evidence.score(r[1]) for r in usable])
        print(f"\n{name}: {len(usable)} measurements ({sum(r[1] is None for r in rows if r[0] == name)} declined)")
        print("  weights: " + ", ".join(f"{f} {w:+.2f}" for f, w in zip(feature_names, coefficients)))
        conditions = np.array([r[4] for r in usable])
        sources = np.array([r[3] for r in usable])
        for condition in CONDITIONS:
            mask = conditions == condition
            per_fake = []
            for source in sorted({s for s, label in zip(sources, y) if label == 1}):
                m = mask & ((sources == source) | (y == 0))
                per_fake.append(f"{source.split('/')[1][:12]} {roc_auc_score(y[m], scores[m]):.3f}")
            print(f"  {condition:10s} AUC all {roc_auc_score(y[mask], scores[mask]):.3f}; " + "; ".join(per_fake))
    if not args.dry_run:
        fitted["_note"] = (
            f"fitted by scripts/fit_checks.py on the training sources ({args.per_source} images each, "
            f"conditions {', '.join(CONDITIONS)}); held out: {', '.join(sorted(holdout))}"
        )
        weights_path.write_text(json.dumps(fitted, indent=1) + "\n")
        print(f"\nwrote {weights_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
