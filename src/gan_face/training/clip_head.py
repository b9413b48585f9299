"""The clip view's linear head, fitted from sufficient statistics, so that a fine-tune can add a user's images to
what the shipped head learnt without shipping a single training image or its features.

The head reads the standardised CLS tokens ``z`` of the chosen blocks, projects them on the ``k`` leading principal
directions of the training features (``u = P^T z``) and applies linear discriminant analysis there with shrinkage:
``w = (S + lambda I)^-1 (m_fake - m_real)`` with ``S`` the pooled within-class covariance, and the intercept at
even prior odds. Every quantity LDA needs is a weighted sum over images (per class: the total weight, the sum of
``u`` and of ``u u^T``), so a head is refitted after adding a user's images in milliseconds
(:meth:`HeadStats.plus`), and those sums (a few hundred kilobytes) ship with the model: they are statistics of the
training set, not images, and no image can be recovered from them.

Within each class every source weighs the same (an image's weight is ``1 / images of its source``), so a big source
of one kind does not decide the direction alone. The statistics also keep how many sources each class holds
(``stats.sources``), so that a fine-tune can weigh a user's folder as one more source of its class.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Optional, Sequence

import numpy as np

#: Projected dimensions and shrinkage (as a share of the mean variance), chosen on the leave-one-out matrix.
DEFAULT_COMPONENTS = 256
DEFAULT_SHRINKAGE = 0.1


@dataclass(frozen=True)
class HeadStats:
    """Standardisation, projection and per-class weighted sums in the projected space (class 0 real, 1 fake)."""

    mean: np.ndarray  # D
    scale: np.ndarray  # D
    basis: np.ndarray  # D x k, orthonormal columns
    weight: np.ndarray  # 2: total weight per class
    first: np.ndarray  # 2 x k: weighted sum of u
    second: np.ndarray  # 2 x k x k: weighted sum of u u^T
    #: sources per class (real, fake) the sums were made of; ``None`` for statistics written before it was kept
    sources: Optional[np.ndarray] = None

    def project(self, features: np.ndarray) -> np.ndarray:
        return ((np.asarray(features, np.float64) - self.mean) / self.scale) @ self.basis

    def plus(self, features: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> "HeadStats":
        """These statistics with more images added (``weights`` per image, in the units of the existing ones)."""
        u = self.project(features)
        weight, first, second = self.weight.copy(), self.first.copy(), self.second.copy()
        for c in (0, 1):
            mask = labels == c
            w = weights[mask]
            weight[c] += w.sum()
            first[c] += w @ u[mask]
            second[c] += (u[mask] * w[:, None]).T @ u[mask]
        return replace(self, weight=weight, first=first, second=second)

    def to_tensors(self) -> dict[str, np.ndarray]:
        tensors = {
            "stats.mean": self.mean.astype(np.float32),
            "stats.scale": self.scale.astype(np.float32),
            "stats.basis": self.basis.astype(np.float16),
            "stats.weight": self.weight.astype(np.float64),
            "stats.first": self.first.astype(np.float64),
            "stats.second": self.second.astype(np.float64),
        }
        if self.sources is not None:
            tensors["stats.sources"] = np.asarray(self.sources, np.int64)
        return tensors

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, np.ndarray]) -> "HeadStats":
        get = lambda k: np.asarray(tensors[f"stats.{k}"], np.float64)  # noqa: E731
        sources = tensors.get("stats.sources")
        return cls(
            get("mean"),
            get("scale"),
            get("basis"),
            get("weight"),
            get("first"),
            get("second"),
            None if sources is None else np.asarray(sources, np.int64),
        )


def source_weights(sources: Sequence[str], labels: np.ndarray) -> np.ndarray:
    """``1 / images of its source`` per image, scaled so that each class sums to its number of sources' share
    of images (keeps weights near 1 on average)."""
    sources = np.asarray(sources)
    weights = np.zeros(len(sources))
    for source in np.unique(sources):
        mask = sources == source
        weights[mask] = 1.0 / mask.sum()
    for c in (0, 1):
        mask = labels == c
        if mask.any():
            weights[mask] *= mask.sum() / weights[mask].sum()
    return weights


def fit_stats(
    features: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    components: int = DEFAULT_COMPONENTS,
    sources: Optional[Sequence[str]] = None,
) -> HeadStats:
    """Standardise, find the ``components`` leading principal directions of the weighted data (randomised SVD,
    seeded) and sum the statistics. ``sources`` (each row's source) counts the sources of each class."""
    from sklearn.utils.extmath import randomized_svd

    x = np.asarray(features, np.float64)
    w = weights / weights.sum()
    mean = w @ x
    scale = np.sqrt(w @ (x - mean) ** 2) + 1e-6
    z = (x - mean) / scale
    k = min(components, *z.shape)
    _, _, vt = randomized_svd(z * np.sqrt(w)[:, None], k, n_iter=4, random_state=0)
    basis = vt.T
    counted = None
    if sources is not None:
        names, labels = np.asarray(sources), np.asarray(labels)
        counted = np.array([len(set(names[labels == c])) for c in (0, 1)], np.int64)
    empty = HeadStats(
        mean,
        scale,
        basis,
        np.zeros(2),
        np.zeros((2, basis.shape[1])),
        np.zeros((2, basis.shape[1], basis.shape[1])),
        counted,
    )
    return empty.plus(features, labels, weights)


def lda_head(stats: HeadStats, shrinkage: float = DEFAULT_SHRINKAGE) -> tuple[np.ndarray, float]:
    """The head as the runtime reads it: ``coef`` over standardised features (``D``) and the intercept, from
    shrunk LDA in the projected space; the log-odds are those of two Gaussians with a shared covariance, at even
    prior odds."""
    if np.any(stats.weight <= 0):
        raise ValueError("the head needs images of both classes")
    means = stats.first / stats.weight[:, None]
    scatter = sum(stats.second[c] - stats.weight[c] * np.outer(means[c], means[c]) for c in (0, 1))
    covariance = scatter / stats.weight.sum()
    ridge = shrinkage * np.trace(covariance) / len(covariance)
    direction = np.linalg.solve(covariance + ridge * np.eye(len(covariance)), means[1] - means[0])
    intercept = -float(direction @ (means[0] + means[1]) / 2)
    return stats.basis @ direction, intercept


def head_tensors(stats: HeadStats, shrinkage: float = DEFAULT_SHRINKAGE) -> dict[str, np.ndarray]:
    """What the head's weights file holds: the runtime's ``mean, scale, coef, intercept`` and the statistics a
    fine-tune adds to."""
    coef, intercept = lda_head(stats, shrinkage)
    return {
        "mean": stats.mean.astype(np.float32),
        "scale": stats.scale.astype(np.float32),
        "coef": coef.astype(np.float32),
        "intercept": np.array([intercept], np.float32),
        "shrinkage": np.array([shrinkage], np.float64),
        **stats.to_tensors(),
    }


def head_logits(
    stats: HeadStats,
    features: np.ndarray,
    shrinkage: float = DEFAULT_SHRINKAGE,
    head: Optional[tuple[np.ndarray, float]] = None,
) -> np.ndarray:
    coef, intercept = head or lda_head(stats, shrinkage)
    return ((np.asarray(features, np.float64) - stats.mean) / stats.scale) @ coef + intercept
