"""Which images train, validate and test: whole sources held out, and people kept on one side of every split."""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from .datasets import Sample

#: Sources never trained on by the shipped model (v2; v1 held out the first six): one unknown GAN, one StyleGAN2
#: set (paired with real FFHQ photos processed the same way), news photos, three sets of profile-style headshots
#: and studio portraits on a blank white wall. They calibrate and test it.
DEFAULT_HOLDOUT = (
    "fake/boredhumans_basemax",
    "fake/tpdne_realorfake",
    "real/paired_realorfake",
    "real/lfw150_umass",
    "real/ropensci_people",
    "real/djangocon_us_people",
    "real/speakers_fossasia2016",
    "real/studio_amfd_realitybending",
)


#: Sources never trained on by gan-face-v3 (its CNNs are v2's, so v2's held-out sources stay out), plus sources
#: added to the data since: Stable Diffusion 1.5 faces from a second repository (a diffusion family in the test
#: half, which v2's had none of), real photos aligned the FFHQ way that are not FFHQ (framing is no evidence), and
#: more profile photos. The FOSSASIA years and csv,conf share people with held-out sources (the data README), so
#: they sit on the held-out side with them.
V3_HOLDOUT = DEFAULT_HOLDOUT + (
    "fake/sd15_dhiandika",
    "real/aligned_ffhq_alae",
    "real/speakers_fossasia2015",
    "real/speakers_fossasia2017",
    "real/speakers_fossasia2020",
    "real/speakers_csvconf_2014_2020",
)


def held_out_half(samples: Sequence[Sample], half: str) -> list[Sample]:
    """The ``"calibration"`` or ``"test"`` half of ``V3_HOLDOUT``'s samples (by identity, seed 0): the halves
    gan-face-v3's fusion is fitted on and evaluated on."""
    held = [s for s in samples if s.source in V3_HOLDOUT]
    calibration, test = split_by_identity(held, 0.5, seed=0)
    return {"calibration": calibration, "test": test}[half]


def split_by_identity(samples: Sequence[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split each source so that ``fraction`` of its identities go to the second part; one person, one side."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    by_source: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_source[sample.source].append(sample)
    for source in sorted(by_source):
        identities = sorted({s.identity for s in by_source[source]})
        chosen = set(rng.permutation(identities)[: round(len(identities) * fraction)].tolist())
        for sample in by_source[source]:
            (second if sample.identity in chosen else first).append(sample)
    return first, second


def write_split_tree(samples: Sequence[Sample], data_root: Path, target: Path) -> None:
    """A folder tree of symbolic links (plus the manifests) that ``index_tree`` reads like the original."""
    if target.exists():
        shutil.rmtree(target)
    for sample in samples:
        relative = Path(sample.path).resolve().relative_to(Path(data_root).resolve())
        link = target / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(sample.path).resolve())
        manifest = Path(sample.path).parent / "MANIFEST.csv"
        if manifest.exists() and not (link.parent / "MANIFEST.csv").exists():
            shutil.copy(manifest, link.parent / "MANIFEST.csv")
