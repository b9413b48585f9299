"""Fitted weights of the checks that combine several measurements (``check_weights.json``).

Each such check turns its raw measurements into one score by a logistic model, standardised per feature. The
weights are fitted on the training sources by ``scripts/fit_checks.py`` and shipped beside this module.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Mapping

import numpy as np

from .._math import sigmoid


@dataclass(frozen=True)
class LinearEvidence:
    features: tuple[str, ...]
    centers: np.ndarray
    scales: np.ndarray
    weights: np.ndarray
    intercept: float

    def terms(self, measured: Mapping[str, float]) -> np.ndarray:
        values = np.array([measured[name] for name in self.features], dtype=np.float64)
        return self.weights * (values - self.centers) / self.scales

    def score(self, measured: Mapping[str, float]) -> float:
        return sigmoid(self.intercept + float(self.terms(measured).sum()))

    def to_dict(self) -> dict:
        return {
            "features": list(self.features),
            "centers": [round(float(v), 6) for v in self.centers],
            "scales": [round(float(v), 6) for v in self.scales],
            "weights": [round(float(v), 6) for v in self.weights],
            "intercept": round(self.intercept, 6),
        }


@functools.lru_cache(maxsize=None)
def check_weights(name: str) -> LinearEvidence:
    data = json.loads(resources.files(__package__).joinpath("check_weights.json").read_text())[name]
    return LinearEvidence(
        features=tuple(data["features"]),
        centers=np.array(data["centers"], dtype=np.float64),
        scales=np.array(data["scales"], dtype=np.float64),
        weights=np.array(data["weights"], dtype=np.float64),
        intercept=float(data["intercept"]),
    )
