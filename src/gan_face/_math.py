"""The two scalar maps every score goes through: probability to log-odds and back."""

from __future__ import annotations

import math

#: Scores are clipped away from 0 and 1 before the logit, so one saturated check cannot dominate without bound.
SCORE_EPSILON = 1e-6


def score_logit(score: float) -> float:
    """Log-odds of a score in [0, 1], clipped to ``[SCORE_EPSILON, 1 - SCORE_EPSILON]`` first."""
    s = min(max(score, SCORE_EPSILON), 1.0 - SCORE_EPSILON)
    return math.log(s / (1.0 - s))


def sigmoid(x: float) -> float:
    """The logistic function, without overflow for large ``|x|``."""
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
