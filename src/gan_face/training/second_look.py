"""Fitting the second look (:class:`gan_face.card.SecondLook`): which images get it, how its score joins the first
look's evidence, and where its operating point sits.

The first look decides most images far from the threshold. The ones it leaves in the band below the threshold
(first likelihood in ``[band_from, threshold)``) get the clip encoder again at a higher resolution, read by a head
of its own. Their likelihood is then a second fusion (every first-look feature and ``"second_look"``), fitted by
the same logistic regression on the calibration images of that band only, and shifted in log-odds so that the
card's threshold keeps its rule: over all calibration rows (the first look's flags and the band's second-look
flags together) at most ``max_fpr`` of the real photos in each condition and ``max_source_fpr`` of each large real
source. One threshold, one "can't tell" band and one reading of the likelihood for every image, whichever look
decided it.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from ..fusion import Fusion
from .clip_matrix import even_spread
from .fitting import fit_fusion, strictest_threshold_of
from .splits import V3_HOLDOUT

SECOND_LOOK = "second_look"


def head_sample(samples, per_source: int) -> list[int]:
    """The images the second look's head fits on: at most ``per_source`` of each source outside the held-out
    ones (an even, seeded sample: the encoder at the second look's size costs 2.5 times the first's)."""
    kept = {s.path for s in even_spread([s for s in samples if s.source not in V3_HOLDOUT], per_source)}
    return [i for i, s in enumerate(samples) if s.path in kept]


def first_likelihoods(fusion: Fusion, rows: Sequence[Mapping]) -> np.ndarray:
    """The first look's likelihood of each row (NaN where it had no evidence)."""
    return np.array([fusion.likelihood(r["scores"]) if fusion.has_evidence(r["scores"]) else np.nan for r in rows])


def in_band(first: np.ndarray, band_from: float, threshold: float) -> np.ndarray:
    """Which rows get the second look (as :meth:`gan_face.detector.Detector._look_again` chooses them)."""
    with np.errstate(invalid="ignore"):
        return (first >= band_from) & (first < threshold)


def final_likelihoods(first: np.ndarray, band: np.ndarray, second: Fusion, rows: Sequence[Mapping]) -> np.ndarray:
    """Each row's likelihood as the runtime gives it: the second fusion's in the band (rows whose second-look
    score is missing, no face, keep the first), the first look's elsewhere."""
    final = first.copy()
    for i in np.flatnonzero(band):
        if rows[i]["scores"].get(SECOND_LOOK) is not None:
            final[i] = second.likelihood(rows[i]["scores"])
    return final


def fit_second_fusion(rows: Sequence[Mapping], band: np.ndarray, first_features: Sequence[str]) -> Fusion:
    """The second fusion, fitted (classes weighted equally, non-negative weights) on the band's rows that have a
    second-look score."""
    chosen = [r for r, b in zip(rows, band) if b and r["scores"].get(SECOND_LOOK) is not None]
    if not any(r["sample"].label == 0 for r in chosen) or not any(r["sample"].label == 1 for r in chosen):
        raise ValueError("the band holds calibration images of only one class: widen it")
    names = [*first_features, SECOND_LOOK]
    labels = [r["sample"].label for r in chosen]
    return fit_fusion({n: [r["scores"].get(n) for r in chosen] for n in names}, labels)


def place_at_threshold(
    second: Fusion,
    rows: Sequence[Mapping],
    first: np.ndarray,
    band: np.ndarray,
    threshold: float,
    max_fpr: float,
    max_source_fpr: Optional[float],
) -> Fusion:
    """``second`` with its intercept shifted by the largest amount for which the card's ``threshold`` still keeps
    the rule over ``rows`` (first-look flags and second-look flags together): found by bisection, the flags only
    grow with the shift."""

    def shifted(delta: float) -> Fusion:
        return Fusion(second.features, second.weights, second.centers, second.scales, second.intercept + delta)

    def keeps_rule(delta: float) -> bool:
        final = final_likelihoods(first, band, shifted(delta), rows)
        known = ~np.isnan(final)
        kept = [r for r, k in zip(rows, known) if k]
        return strictest_threshold_of(final[known], kept, max_fpr, max_source_fpr) <= threshold

    low, high = -60.0, 60.0
    if not keeps_rule(low):
        raise ValueError("the first look alone already breaks the rule at the card's threshold")
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if keeps_rule(middle) else (low, middle)
    return shifted(low)
