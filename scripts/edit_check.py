"""What each model says about edited photos of people (and edited generated faces): shortcuts, measured.

    python scripts/edit_check.py ../shared/data --cards models/gan-face-v3.json models/gan-face-v4.json
        --work WORK [--edit retouch|headshot-cut] [--half test] [-o report.json]

Every image of the held-out half (``training.splits.held_out_half``: people and generators no model fitted on) is
edited, then uploaded as an avatar (centre square, 400 px, JPEG 85), and scored by each card through the runtime:

* ``retouch``: retouched (``training.retouch``, seeded by 1 and the image's index: recipes no head fitted on).
  Polish is not evidence.
* ``headshot-cut``: cut to a square 6.8 interocular distances wide around the face, JPEG 95: how the FLUX.1-dev
  and SDXL-Turbo occupation scenes were cut (their median). The way a shot is cut is not evidence.

Per source: the share flagged at the card's threshold and the share of each answer. For the real sources that is
the false-positive rate the edit causes, to read beside the card's avatar figures for the same photos unedited.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gan_face._runtime import configure_threads, tune_allocator
from gan_face.align import FaceAligner
from gan_face.detector import Detector
from gan_face.io import load_image
from gan_face.training.conditions import apply_condition, face_square
from gan_face.training.datasets import index_tree
from gan_face.training.facecache import detect_cached
from gan_face.training.retouch import retouch
from gan_face.training.splits import held_out_half

SEED = 1  # the training copies are seeded by 0
OCCUPATION_CUT = 6.8  # interocular distances: the median side of the occupation sources' headshots


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--cards", nargs="+", required=True)
    parser.add_argument("--work", required=True, type=Path, help="cache folder for the faces found")
    parser.add_argument("--edit", default="retouch", choices=("retouch", "headshot-cut"))
    parser.add_argument("--half", default="test", choices=("calibration", "test"))
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    tune_allocator()

    samples = index_tree(args.data)
    index = {s.path: i for i, s in enumerate(samples)}
    chosen = held_out_half(samples, args.half)
    faces = detect_cached([s.path for s in chosen], FaceAligner(), args.work)
    jobs = [s for s in chosen if faces[s.path]]

    def edited(sample) -> np.ndarray:
        i = index[sample.path]
        points = faces[sample.path][0].landmarks.to_array()
        image = load_image(sample.path)
        if args.edit == "retouch":
            image = retouch(image, points, np.random.default_rng([SEED, i]))
        else:
            image = face_square(image, points, OCCUPATION_CUT, quality=95)[0]
        return apply_condition(image, "avatar", seed=i)

    report: dict = {
        "edit": args.edit,
        "half": args.half,
        "n_images": len(jobs),
        "n_without_face": len(chosen) - len(jobs),
    }
    report["cards"] = {}
    for card in args.cards:
        detector = Detector(card, threads=configure_threads())
        answers: dict = defaultdict(lambda: defaultdict(int))
        scored_stream = detector.score_stream(jobs, source=edited)
        for scored in tqdm(scored_stream, total=len(jobs), desc=Path(card).stem, unit="img"):
            verdict = scored.result
            for group in (scored.item.source, "all real" if scored.item.label == 0 else "all generated"):
                answers[group]["n"] += 1
                answers[group]["flagged"] += bool(verdict.synthetic)
                answers[group][verdict.answer] += 1
        threshold = detector.threshold
        table = {
            group: {"n": c["n"], "flagged": round(c["flagged"] / c["n"], 4)}
            | {name: round(v / c["n"], 4) for name, v in c.items() if name not in ("n", "flagged")}
            for group, c in sorted(answers.items())
        }
        report["cards"][card] = {"threshold": threshold, "by_source": table}
        print(f"\n{card} (threshold {threshold:.4f}): share flagged, {args.edit} then avatar")
        for group, row in table.items():
            print(f"  {group:45s} {row['n']:5d}  {row['flagged']:.3f}")
    if args.output:
        args.output.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
