"""Does the clip view generalise better to unseen diffusion families when it reads pixels at their own
resolution? The shipped view shrinks the avatar's centred square (400 px) to 144 px, which smooths away the
finest traces a generator leaves; UnivFD evaluates its frozen CLIP on a centre crop taken without resizing.

Leave-one-family-out, as ``scripts/clip_matrix.py`` runs it, on an even sample of each source, for the shipped
view (``frame``), a 144-px centre crop at the image's own resolution (``native``, after the condition, so a 400-px
avatar), and both views' features side by side (two encoder passes: twice the cost):

    python experiments/clip_native_crop.py ../shared/data --work WORK [--per-source 60] [-o result.json]

The native view exists only here (it is patched into :func:`gan_face.views.cut_view` for the crop pools, which
are built in forked processes that inherit the patch).
"""

from __future__ import annotations

import json
import sys

import numpy as np

from gan_face import views
from gan_face._runtime import tune_allocator
from gan_face.training import clip_matrix, pools  # the matrix's folds and metrics, as the study script runs them
from gan_face.training.datasets import index_tree
from gan_face.training.features import condition_features

NATIVE = "native"


def native_centre(image: np.ndarray, size: int) -> np.ndarray:
    """The centred ``size`` x ``size`` pixels, not resized (mirrored at the border if the image is smaller)."""
    height, width = image.shape[:2]
    if min(height, width) < size:
        pad_y, pad_x = max(0, size - height), max(0, size - width)
        image = np.pad(
            image, ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2), (0, 0)), "symmetric"
        )
        height, width = image.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    return np.ascontiguousarray(image[top : top + size, left : left + size])


def patch_views() -> None:
    shipped = views.cut_view

    def cut_view(image, landmarks, view, size, template):
        return native_centre(image, size) if view == NATIVE else shipped(image, landmarks, view, size, template)

    pools.cut_view = cut_view


def main() -> int:
    parser = clip_matrix.sample_study_parser(__doc__)
    parser.add_argument("--conditions", default="avatar")
    args = parser.parse_args()
    tune_allocator()
    patch_views()

    samples = clip_matrix.even_spread(index_tree(args.data), args.per_source)
    conditions = args.conditions.split(",")
    blocks = clip_matrix.parse_blocks(args.blocks)
    computed = {}
    for view in ("frame", NATIVE):
        computed[view] = condition_features(
            samples, conditions, args.encoder, args.work, input_size=144, view=view, group_size=128
        )
    usable = computed["frame"][1] & computed[NATIVE][1]
    frame, native = computed["frame"][0], computed[NATIVE][0]
    # side by side: block b of the native view becomes block b + depth, so the head reads both views' tokens
    both = np.concatenate([frame, native], axis=2)
    depth = frame.shape[2]
    runs = {
        "frame (shipped)": (frame, blocks),
        "native centre crop": (native, blocks),
        "both views": (both, blocks + [b + depth for b in blocks]),
    }
    report = {"per_source": args.per_source, "blocks": args.blocks, "conditions": conditions, "runs": {}}
    for name, (features, chosen) in runs.items():
        matrix = clip_matrix.run_matrix(
            features, samples, usable, conditions, chosen, args.components, args.shrinkage
        )
        report["runs"][name] = matrix
        for condition in conditions:
            print(f"{name:20s} {condition:9s} {clip_matrix.matrix_line(matrix, condition)}")
    if args.output:
        args.output.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
