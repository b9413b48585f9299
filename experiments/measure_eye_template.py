"""Measure the StyleGAN/FFHQ eye template with our own detector on the GAN faces of a data tree.

Prints the robust mean and covariance of the normalised landmark geometry (eye centres and mouth centre as
fractions of the frame) over every fake image, per source and pooled, ready to paste into
``src/gan_face/checks/eyes.py``. Usage: ``python experiments/measure_eye_template.py ../shared/data``
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import numpy as np
from sklearn.covariance import MinCovDet

from gan_face.align import FaceAligner
from gan_face.checks.eyes import GEOMETRY_NAMES, face_geometry
from gan_face.io import load_image
from gan_face.training.datasets import index_tree
from gan_face.training.facecache import detect_cached


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="folder with real/ and fake/ subfolders")
    parser.add_argument("--cache", default="/tmp/gan-face-cache", help="face-detection cache folder")
    args = parser.parse_args()

    samples = [s for s in index_tree(args.data) if s.label == 1]
    faces = detect_cached([s.path for s in samples], FaceAligner(), args.cache)
    per_source: dict[str, list[np.ndarray]] = defaultdict(list)
    for sample in samples:
        found = faces[sample.path]
        if found:
            height, width = load_image(sample.path).shape[:2]  # as scoring sees it: EXIF rotation applied
            per_source[sample.source].append(face_geometry(found[0], width, height))
    for source, rows in sorted(per_source.items()):
        values = np.array(rows)
        print(f"{source}: n={len(values)}")
        for name, mean, std in zip(GEOMETRY_NAMES, values.mean(0), values.std(0)):
            print(f"    {name:10s} {mean:.4f} +- {std:.4f}")
    pooled = np.concatenate([np.array(v) for v in per_source.values()])
    # 90% support: robust to failed detections, yet wide enough to hold ordinary landmark noise
    robust = MinCovDet(support_fraction=0.9, random_state=0).fit(pooled)
    print(f"pooled robust fit over {len(pooled)} faces ({robust.support_.sum()} in the support)")
    np.set_printoptions(floatmode="maxprec", precision=7, suppress=False, linewidth=110)
    print("TEMPLATE_MEAN =", np.array2string(robust.location_.round(5), separator=", "))
    print("TEMPLATE_COVARIANCE =", np.array2string(robust.covariance_.round(8), separator=", "))
    inter = np.hypot(pooled[:, 2] - pooled[:, 0], pooled[:, 3] - pooled[:, 1])
    print(f"interocular distance: {np.median(inter):.4f} (sd {inter.std():.4f})")
    print("spread (sd):", np.array2string(np.sqrt(np.diag(robust.covariance_)), precision=4, separator=", "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
