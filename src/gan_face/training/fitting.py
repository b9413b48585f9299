"""Fitting the evidence weights on held-out data: the fusion (all of it, or one refitted term when fine-tuning)
and its threshold, and the checks that combine several measurements. Needs ``gan-face[train]`` (scipy)."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from .._math import score_logit
from ..checks._weights import LinearEvidence
from ..fusion import Fusion
from .metrics import threshold_at_fpr


def fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    signs: Optional[Sequence[str]] = None,
    *,
    l2: float = 1e-3,
    offset: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, float]:
    """Logistic regression with classes weighted equally and optional sign constraints on the weights.

    ``signs[j]`` is ``"+"`` (weight >= 0), ``"-"`` (<= 0) or ``""`` (free). Evidence that by its meaning can only
    point one way (more asymmetry cannot make a face more real) is held to that direction, so a quirk of the
    training data cannot invert what a check says. ``offset`` is a fixed per-sample term added to the
    log-odds (the part of a model that is kept). Needs scipy (``gan-face[train]``).
    """
    from scipy.optimize import minimize

    y = np.asarray(y, dtype=np.float64)
    n, d = x.shape
    sample_weight = np.where(y == 1, 0.5 / max(y.sum(), 1), 0.5 / max((1 - y).sum(), 1))

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = params[:d], params[d]
        z = x @ w + b + (0.0 if offset is None else offset)
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))
        nll = -(sample_weight * (y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))).sum()
        residual = sample_weight * (p - y)
        gradient = np.r_[x.T @ residual + 2 * l2 * w, residual.sum()]
        return nll + l2 * float(w @ w), gradient

    bounds = [{"+": (0.0, None), "-": (None, 0.0)}.get(sign, (None, None)) for sign in (signs or [""] * d)]
    result = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", bounds=bounds + [(None, None)])
    return result.x[:d], float(result.x[d])


def fit_fusion(
    scores: Mapping[str, Sequence[Optional[float]]],
    labels: Sequence[int],
) -> Fusion:
    """Fit the fusion on validation data the CNN did not train on. Needs ``gan-face[train]``.

    ``scores[name][i]`` is check ``name``'s score on image ``i`` (``None`` where it could not judge). Every
    weight is held non-negative: each check's score means "more GAN-like" by construction, so the fused
    likelihood can only rise with each piece of evidence.
    """
    y = np.asarray(labels, dtype=int)
    names = tuple(scores)
    centers, scales, columns = [], [], []
    for name in names:
        raw = np.array([np.nan if s is None else score_logit(s) for s in scores[name]], dtype=np.float64)
        present = ~np.isnan(raw)
        # a check that never judged one class (or at all) gets a neutral centre and unit scale
        class_means = [raw[present & (y == label)].mean() for label in (0, 1) if (present & (y == label)).any()]
        center = float(np.mean(class_means)) if class_means else 0.0
        scale = float(np.std(raw[present])) if present.sum() > 1 else 1.0
        scale = scale if scale > 1e-9 else 1.0
        centers.append(center)
        scales.append(scale)
        columns.append(np.where(present, (raw - center) / scale, 0.0))
    weights, intercept = fit_logistic(np.stack(columns, axis=1), y, ["+"] * len(names))
    return Fusion(
        features=names,
        weights=tuple(float(w) for w in weights),
        centers=tuple(centers),
        scales=tuple(scales),
        intercept=intercept,
    )


def refit_one(fusion: Fusion, name: str, rows: Sequence[Mapping], max_fpr: float = 0.01) -> tuple[Fusion, float]:
    """Refit only evidence ``name``'s term and the intercept, keeping every other weight of ``fusion``.

    For fine-tuning: only the CNN changed, and a few dozen held-out images can recalibrate one term where
    refitting every weight would overfit them.
    """
    return refit_terms(fusion, (name,), rows, max_fpr)


def refit_terms(
    fusion: Fusion, names: Sequence[str], rows: Sequence[Mapping], max_fpr: float = 0.01
) -> tuple[Fusion, float]:
    """Refit the terms of the evidence in ``names`` (the parts a fine-tune changed) and the intercept, keeping
    every other weight of ``fusion``; evidence the fusion does not weigh yet is added as a new term. Returns the
    fusion and its threshold at ``max_fpr`` in every condition of ``rows``."""
    for name in names:
        if name not in fusion.features:
            fusion = Fusion(fusion.features + (name,), fusion.weights + (0.0,), fusion.centers + (0.0,),
                            fusion.scales + (1.0,), fusion.intercept)  # fmt: skip
    labels = np.array([r["sample"].label for r in rows])
    columns, centers, scales = [], [], []
    for name in names:
        raw = np.array([np.nan if r["scores"].get(name) is None else score_logit(r["scores"][name]) for r in rows])
        present = ~np.isnan(raw)
        centers.append(float(np.mean([raw[present & (labels == k)].mean() for k in (0, 1)])))
        scales.append(float(np.std(raw[present])) or 1.0)
        columns.append(np.where(present, (raw - centers[-1]) / scales[-1], 0.0))
    kept = fusion.contributions  # the other checks' terms stay as they were
    offset = np.array([sum(v for k, v in kept(r["scores"]).items() if k not in names) for r in rows])
    weights, intercept = fit_logistic(np.stack(columns, axis=1), labels, ["+"] * len(names), offset=offset)
    new = {name: (float(w), c, s) for name, w, c, s in zip(names, weights, centers, scales)}
    column = lambda i, old: tuple(new[f][i] if f in new else v for f, v in zip(fusion.features, old))  # noqa: E731
    refitted = Fusion(
        fusion.features,
        column(0, fusion.weights),
        column(1, fusion.centers),
        column(2, fusion.scales),
        intercept,
    )
    return refitted, strictest_threshold(refitted, rows, max_fpr)


def fit_linear_evidence(
    features: Sequence[str], x: np.ndarray, y: np.ndarray, signs: Optional[Sequence[str]] = None
) -> LinearEvidence:
    """A check's measurements (``x``, one column per feature) into one standardised, sign-constrained score."""
    centers, scales = x.mean(axis=0), x.std(axis=0) + 1e-9
    coefficients, intercept = fit_logistic((x - centers) / scales, y, signs)
    return LinearEvidence(tuple(features), centers, scales, coefficients, intercept)


def fit_on_rows(
    rows: Sequence[Mapping],
    max_fpr: float = 0.01,
    features: Optional[Sequence[str]] = None,
    max_source_fpr: Optional[float] = None,
) -> tuple[Fusion, float]:
    """Fusion and threshold from rows of :func:`gan_face.training.scoring.score_samples`.

    ``features`` limits the evidence fused (default: every score in the rows). The threshold is the strictest
    of the per-condition ones, so at most ``max_fpr`` of the real photos are flagged in every condition
    (clean files, avatars, laundered, cropped), not merely on average; with ``max_source_fpr``, also at most
    that share of each real source (:func:`strictest_threshold`).
    """
    names = list(features) if features is not None else list(rows[0]["scores"])
    labels = np.array([r["sample"].label for r in rows])
    fusion = fit_fusion({n: [r["scores"][n] for r in rows] for n in names}, labels)
    return fusion, strictest_threshold(fusion, rows, max_fpr, max_source_fpr)


def strictest_threshold(
    fusion: Fusion, rows: Sequence[Mapping], max_fpr: float, max_source_fpr: Optional[float] = None
) -> float:
    """The threshold that flags at most ``max_fpr`` of the real photos in every condition of ``rows`` and, with
    ``max_source_fpr``, at most that share of each real source in every condition.

    The per-source limit holds in each condition and over all conditions together, for groups large enough that
    the share is at least one photo (``n >=
    1 / max_source_fpr``): below that it would allow no flag at all, and the threshold would be set by the
    single highest photo of a few dozen, which says little about the next few dozen. It guards the real photos
    that look most like generated ones (FFHQ-framed portraits, for a network that sees the frame) from being
    averaged away among easy ones.
    """
    likelihoods = np.array([fusion.likelihood(r["scores"]) for r in rows])
    return strictest_threshold_of(likelihoods, rows, max_fpr, max_source_fpr)


def strictest_threshold_of(
    likelihoods: np.ndarray, rows: Sequence[Mapping], max_fpr: float, max_source_fpr: Optional[float] = None
) -> float:
    """:func:`strictest_threshold` for likelihoods already computed (one per row of ``rows``): a model whose
    likelihood is not one fusion's (a second look decides part of the rows)."""
    labels = np.array([r["sample"].label for r in rows])
    conditions = np.array([r["condition"] for r in rows])
    groups = [(labels == 0) & (conditions == c) for c in dict.fromkeys(conditions)]
    limits = [max_fpr] * len(groups)
    if max_source_fpr is not None:
        sources = np.array([r["sample"].source for r in rows])
        for source in dict.fromkeys(sources[labels == 0]):
            # each source in each condition, and each source over all conditions: a source of 50-90 photos per
            # condition (profile photos of one community, FFHQ-aligned portraits) is too small to hold to 1% in
            # one condition, but its five conditions together are not (gan-face-v3: the pooled limit halved the
            # FFHQ-aligned and conference photos flagged on the test half for 2-7 points of TPR)
            for condition in (*dict.fromkeys(conditions), None):
                group = (labels == 0) & (sources == source)
                if condition is not None:
                    group &= conditions == condition
                if group.sum() * max_source_fpr >= 1:
                    groups.append(group)
                    limits.append(max_source_fpr)
    return max(threshold_at_fpr(likelihoods[group], limit) for group, limit in zip(groups, limits))


def fit_cant_tell(rows: Sequence[Mapping], threshold: float, real_share: float = 0.05) -> float:
    """The lower edge of the "can't tell" band: the likelihood above which ``real_share`` of the real photos in
    ``rows`` (scored rows, every condition pooled; rows without a likelihood left out) lie, never above the
    threshold. Fit it on calibration data, as the threshold."""
    real = np.array([r["likelihood"] for r in rows if r["sample"].label == 0 and r["likelihood"] is not None])
    if real.size == 0:
        raise ValueError("no scored real photos to fit the can't-tell band on")
    return float(min(np.quantile(real, 1.0 - real_share), threshold))


def answer_shares(rows: Sequence[Mapping], threshold: float, cant_tell_from: float) -> dict[str, dict]:
    """Per condition, the share of real photos and of generated faces given each answer (rows without a
    likelihood, no face found, are counted apart as ``no_likelihood``)."""
    from ..result import CANT_TELL, LIKELY_CAMERA, LIKELY_GENERATED

    shares: dict[str, dict] = {}
    for condition in sorted({r["condition"] for r in rows}):
        entry: dict[str, dict] = {}
        for kind, label in (("real", 0), ("generated", 1)):
            group = [r for r in rows if r["condition"] == condition and r["sample"].label == label]
            scored = np.array([r["likelihood"] for r in group if r["likelihood"] is not None])
            n = max(len(group), 1)
            entry[kind] = {
                "n": len(group),
                LIKELY_GENERATED: round(float((scored >= threshold).sum()) / n, 4),
                CANT_TELL: round(float(((scored >= cant_tell_from) & (scored < threshold)).sum()) / n, 4),
                LIKELY_CAMERA: round(float((scored < cant_tell_from).sum()) / n, 4),
                "no_likelihood": round((len(group) - scored.size) / n, 4),
            }
        shares[condition] = entry
    return shares
