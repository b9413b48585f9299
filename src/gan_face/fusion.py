"""Fusion: every piece of evidence into one calibrated likelihood, and the threshold that goes with it.

Each check's score ``s`` becomes the feature ``z = (logit(s) - center) / scale`` and the fused log-odds are
``intercept + sum(weight * z)``: a logistic regression, so each evidence's share of a verdict is its own term, and
fitting it on data the CNN never trained on is also its calibration (Platt scaling). Classes are weighted equally,
so the likelihood holds at even prior odds. Evidence a check could not judge (``score=None``) gets ``z = 0``,
which ``center`` places midway between the two classes: absent evidence pushes neither way.

Everything lives in the model card's ``"fusion"`` entry; features are named after checks, so a new check enters
by refitting, without code changes here. Fitting lives in the training wing (``gan_face.training.fitting``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

from ._math import score_logit, sigmoid


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

    def has_evidence(self, scores: Mapping[str, Optional[float]]) -> bool:
        """Whether any evidence that carries weight was measured (else the likelihood would be the intercept's
        alone: a number that says nothing about the image)."""
        return any(w != 0 and scores.get(name) is not None for name, w in zip(self.features, self.weights))

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
