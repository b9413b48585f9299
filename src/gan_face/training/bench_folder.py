"""The benchmarks' folder of avatars (``scripts/bench.py``, ``scripts/bench_serve.py``): the avatar condition of
DESIGN.md (centre square, 400 px, JPEG 85) applied to images of the data tree, or to scikit-image's astronaut when
there is no data tree. Built once and reused: a folder that already holds enough avatars is left as it is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..io import load_image
from .conditions import apply_condition
from .datasets import index_tree


def build_folder(folder: Path, n: int, data: Path | None) -> list[Path]:
    """The first ``n`` avatars of ``folder``, made there first if it holds fewer (from ``data``, a data tree)."""
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("*.jpg"))
    if len(existing) >= n:
        return existing[:n]
    sources: list = []
    if data is not None and (data / "fake").is_dir():
        samples = index_tree(data)
        picks = np.random.default_rng(0).permutation(len(samples))[:n]
        sources = [samples[i].path for i in picks]
    paths = []
    for i in range(n):
        if sources:
            image = load_image(sources[i % len(sources)])
        else:
            from skimage import data as skdata

            image = skdata.astronaut()[:, ::-1] if i % 2 else skdata.astronaut()
        avatar = apply_condition(image, "avatar", seed=i)
        path = folder / f"avatar_{i:05d}.jpg"
        Image.fromarray(avatar).save(path, quality=85)
        paths.append(path)
    return paths
