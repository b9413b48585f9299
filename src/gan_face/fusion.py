"""Fusion: every piece of evidence into one calibrated likelihood, and the threshold that goes with it.

Each check's score ``s`` becomes the feature ``z = (logit(s) - center) / scale`` and the fused log-odds are
``intercept + sum(weight * z)``: a logistic regression, so each evidence's share of a verdict is its own term, and
fitting it on data the CNN never trained on is also its calibration (Platt scaling). Classes are weighted equally,
so the likelihood holds at even prior odds. Evidence a check could not judge (``score=None``) gets ``z = 0``,
which ``center`` places midway between the two classes: absent evidence pushes neither way.

Everything lives in the model card's ``"fusion"`` entry; features are named after checks, so a new check enters
by refitting, without code changes here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

#: Scores are clipped away from 0 and 1 before the logit, so one saturated check cannot dominate without bound.
SCORE_EPSILON = 1e-6


def score_logit(score: float) -> float:
    s = min(max(score, SCORE_EPSILON), 1.0 - SCORE_EPSILON)
    return math.log(s / (1.0 - s))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


@dataclass(frozen=True)
class Fusion:
    features: tuple[str, ...]
    weights: tuple[float, ...]
    centers: tuple[float, ...]
    scales: tuple[float, ...]
    intercept: float

    def contributions(self, scores: Mapping[str, Optional[float]]) -> dict[str, float]:
        """Each feature's term in the fused log-odds (0 for evidence that is absent)."""
        terms = {}
        for name, weight, center, scale in zip(self.features, self.weights, self.centers, self.scales):
            score = scores.get(name)
            terms[name] = 0.0 if score is None else weight * (score_logit(score) - center) / scale
        return terms

    def log_odds(self, scores: Mapping[str, Optional[float]]) -> float:
        return self.intercept + sum(self.contributions(scores).values())

    def likelihood(self, scores: Mapping[str, Optional[float]]) -> float:
        return sigmoid(self.log_odds(scores))

    def to_dict(self) -> dict[str, object]:
        # unrounded, so the stored threshold sits exactly where it was chosen
        return {
            "features": list(self.features),
            "weights": list(self.weights),
            "centers": list(self.centers),
            "scales": list(self.scales),
            "intercept": self.intercept,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> "Fusion":
        features = tuple(str(f) for f in data["features"])  # type: ignore[union-attr]
        columns = [tuple(float(v) for v in data[key]) for key in ("weights", "centers", "scales")]  # type: ignore
        if any(len(column) != len(features) for column in columns):
            raise ValueError("fusion: features, weights, centers and scales must have the same length")
        if any(s <= 0 for s in columns[2]):
            raise ValueError("fusion: scales must be positive")
        return cls(features, *columns, intercept=float(data["intercept"]))  # type: ignore[arg-type]


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


def threshold_at_fpr(real_likelihoods: Sequence[float], max_fpr: float = 0.01) -> float:
    """The lowest threshold that flags at most ``max_fpr`` of these real photos (``likelihood >= threshold``)."""
    values = np.sort(np.asarray(real_likelihoods, dtype=np.float64))[::-1]
    allowed = int(math.floor(max_fpr * len(values)))  # how many reals may score at or above the threshold
    if allowed >= len(values):
        return float(min(values.min(initial=0.0), 0.0))
    # just above the first real that must not be flagged
    return float(np.nextafter(values[allowed], np.inf))


def refit_one(fusion: Fusion, name: str, rows: Sequence[Mapping], max_fpr: float = 0.01) -> tuple[Fusion, float]:
    """Refit only evidence ``name``'s term and the intercept, keeping every other weight of ``fusion``.

    For fine-tuning: only the CNN changed, and a few dozen held-out images can recalibrate one term where
    refitting every weight would overfit them.
    """
    index = fusion.features.index(name)
    raw = np.array([np.nan if r["scores"].get(name) is None else score_logit(r["scores"][name]) for r in rows])
    labels = np.array([r["sample"].label for r in rows])
    present = ~np.isnan(raw)
    center = float(np.mean([raw[present & (labels == k)].mean() for k in (0, 1)]))
    scale = float(np.std(raw[present])) or 1.0
    kept = fusion.contributions  # the other checks' terms stay as they were
    offset = np.array([sum(v for k, v in kept(r["scores"]).items() if k != name) for r in rows])
    column = np.where(present, (raw - center) / scale, 0.0)[:, None]
    (weight,), intercept = fit_logistic(column, labels, ["+"], offset=offset)
    replace = lambda values, new: tuple(new if i == index else v for i, v in enumerate(values))  # noqa: E731
    refitted = Fusion(fusion.features, replace(fusion.weights, float(weight)), replace(fusion.centers, center),
                      replace(fusion.scales, scale), intercept)
    likelihoods = np.array([refitted.likelihood(r["scores"]) for r in rows])
    conditions = np.array([r["condition"] for r in rows])
    threshold = max(
        threshold_at_fpr(likelihoods[(labels == 0) & (conditions == c)], max_fpr) for c in dict.fromkeys(conditions)
    )
    return refitted, threshold


def fit_on_rows(
    rows: Sequence[Mapping], max_fpr: float = 0.01, features: Optional[Sequence[str]] = None
) -> tuple[Fusion, float]:
    """Fusion and threshold from rows of :func:`gan_face.evaluation.score_samples`.

    ``features`` limits the evidence fused (default: every score in the rows). The threshold is the strictest
    of the per-condition ones, so at most ``max_fpr`` of the real photos are flagged in every condition
    (clean files, avatars, laundered, cropped), not merely on average.
    """
    names = list(features) if features is not None else list(rows[0]["scores"])
    labels = np.array([r["sample"].label for r in rows])
    fusion = fit_fusion({n: [r["scores"][n] for r in rows] for n in names}, labels)
    likelihoods = np.array([fusion.likelihood(r["scores"]) for r in rows])
    conditions = np.array([r["condition"] for r in rows])
    threshold = max(
        threshold_at_fpr(likelihoods[(labels == 0) & (conditions == c)], max_fpr) for c in dict.fromkeys(conditions)
    )
    return fusion, threshold
