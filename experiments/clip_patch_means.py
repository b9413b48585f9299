"""Do the patch tokens carry what the CLS tokens miss on unseen diffusion families? The head reads the CLS
token of blocks 8-11; this adds the mean of the patch tokens after the same blocks (RINE and UnivFD read the CLS
token only; the patch mean is a cheap summary of the local evidence, computed inside the same encoder pass).

Leave-one-family-out as ``scripts/clip_matrix.py`` runs it, on an even sample of each source, avatar condition,
shipped frame view (the crop pools of ``scripts/clip_matrix.py``, cached under ``--work``), for CLS alone, patch
means alone and both:

    python experiments/clip_patch_means.py ../shared/data --work WORK [--per-source 60] [-o result.json]
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gan_face._runtime import tune_allocator
from gan_face.card import CnnConfig, load_state_dict
from gan_face.clip import CLIP_CHUNK
from gan_face.graphs.clip_vit import clip_vit
from gan_face.graphs.runtime import CompiledNetwork
from gan_face.training import clip_matrix  # the matrix's folds and metrics, as the study script runs them
from gan_face.training.datasets import index_tree
from gan_face.training.pools import ConditionVariants, build_pool

SIZE, GROUP = 144, 128


def encode(pool, encoder: str, depth: int, workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """CLS tokens (``N x depth x 768``) and patch means (``N x (depth - 1) x 768``) of every crop in ``pool``."""
    graph = clip_vit(load_state_dict(encoder), SIZE, CLIP_CHUNK, depth, patch_means=True)
    network = CompiledNetwork(
        graph, CLIP_CHUNK, streams=workers, cpu_hints={"DYNAMIC_QUANTIZATION_GROUP_SIZE": GROUP}
    )
    crops = pool.crops[:, 0]
    chunks = [range(i, min(i + 64, len(crops))) for i in range(0, len(crops), 64)]
    with ThreadPoolExecutor(workers) as threads:
        parts = list(threads.map(lambda rows: network(np.asarray(crops[rows.start : rows.stop])), chunks))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def main() -> int:
    parser = clip_matrix.sample_study_parser(__doc__)
    args = parser.parse_args()
    tune_allocator()

    samples = clip_matrix.even_spread(index_tree(args.data), args.per_source)
    pool = build_pool(
        samples,
        args.work,
        CnnConfig(input_size=SIZE, view="frame"),
        variants=1,
        make_variant=ConditionVariants(["avatar"]),
        spec={"conditions": ["avatar"]},
    )
    blocks = clip_matrix.parse_blocks(args.blocks)
    depth = max(blocks) + 2  # the last block built computes its CLS row only; its patches are not needed
    cls, means = encode(pool, args.encoder, depth)
    # one array of "blocks": the CLS tokens first, then the patch means, so the matrix's block lists pick either
    tokens = np.concatenate([cls, means], axis=1)[:, None]
    runs = {
        "CLS (shipped)": blocks,
        "patch means": [depth + b for b in blocks],
        "CLS and patch means": blocks + [depth + b for b in blocks],
    }
    report = {"per_source": args.per_source, "blocks": args.blocks, "runs": {}}
    for name, chosen in runs.items():
        matrix = clip_matrix.run_matrix(
            tokens, samples, pool.usable, ["avatar"], chosen, args.components, args.shrinkage
        )
        report["runs"][name] = matrix
        print(f"{name:22s} {clip_matrix.matrix_line(matrix, 'avatar')}")
    if args.output:
        args.output.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
