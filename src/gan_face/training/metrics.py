"""The metrics of the evaluation protocol (DESIGN.md), the one implementation: AUC, TPR at a low FPR, the
threshold for an FPR, calibration error, per source and per generator, and their intervals (a bootstrap interval
of the AUC, the exact binomial interval of a rate). Needs scikit-learn (``gan-face[train]``)."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from .scoring import row_likelihoods


def threshold_at_fpr(real_likelihoods: Sequence[float], max_fpr: float = 0.01) -> float:
    """The lowest threshold that flags at most ``max_fpr`` of these real photos (``likelihood >= threshold``)."""
    values = np.sort(np.asarray(real_likelihoods, dtype=np.float64))[::-1]
    allowed = int(math.floor(max_fpr * len(values)))  # how many reals may score at or above the threshold
    if allowed >= len(values):
        return float(min(values.min(initial=0.0), 0.0))
    # just above the first real that must not be flagged
    return float(np.nextafter(values[allowed], np.inf))


def tpr_at_fpr(labels: Sequence[int], scores: Sequence[float], max_fpr: float) -> float:
    """Share of fakes flagged at the strictest threshold that flags at most ``max_fpr`` of the reals."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if not (y == 0).any() or not (y == 1).any():
        return float("nan")
    return float(np.mean(s[y == 1] >= threshold_at_fpr(s[y == 0], max_fpr)))


def expected_calibration_error(labels: Sequence[int], likelihoods: Sequence[float], bins: int = 10) -> float:
    """ECE over equal-width bins, with classes weighted equally (the likelihood holds at even prior odds)."""
    y = np.asarray(labels)
    p = np.asarray(likelihoods, dtype=np.float64)
    n_pos, n_neg = max((y == 1).sum(), 1), max((y == 0).sum(), 1)
    weights = np.where(y == 1, 0.5 / n_pos, 0.5 / n_neg)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        in_bin = index == b
        mass = weights[in_bin].sum()
        if mass > 0:
            observed = (weights[in_bin] * y[in_bin]).sum() / mass
            predicted = (weights[in_bin] * p[in_bin]).sum() / mass
            error += mass * abs(observed - predicted)
    return float(error)


def ranking_metrics(labels: Sequence[int], scores: Sequence[float]) -> dict[str, float]:
    """What a score ranks, whatever its scale (a likelihood or a logit): AUC and TPR at 1% and 0.1% FPR."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    both = (y == 0).any() and (y == 1).any()
    return {
        "auc": float(roc_auc_score(y, s)) if both else float("nan"),
        "tpr_at_1pct_fpr": tpr_at_fpr(y, s, 0.01),
        "tpr_at_0.1pct_fpr": tpr_at_fpr(y, s, 0.001),
    }


def bootstrap_auc(labels: np.ndarray, scores: np.ndarray, rounds: int = 200, seed: int = 0) -> list[float]:
    """A 95% interval of the AUC, resampling fakes and reals separately."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    fakes, reals = scores[labels == 1], scores[labels == 0]
    values = []
    for _ in range(rounds):
        f = rng.choice(fakes, len(fakes))
        r = rng.choice(reals, len(reals))
        values.append(roc_auc_score(np.r_[np.ones(len(f)), np.zeros(len(r))], np.r_[f, r]))
    return [round(float(np.percentile(values, 2.5)), 4), round(float(np.percentile(values, 97.5)), 4)]


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval for a rate of ``k`` in ``n``."""
    from scipy.stats import beta

    if n == 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def metrics(labels: Sequence[int], likelihoods: Sequence[float], threshold: float) -> dict[str, float]:
    """AUC, TPR at 1% and 0.1% FPR, FPR and TPR at ``threshold``, calibration error, counts."""
    y = np.asarray(labels)
    p = np.asarray(likelihoods, dtype=np.float64)
    both = (y == 0).any() and (y == 1).any()
    return {
        "n_real": int((y == 0).sum()),
        "n_fake": int((y == 1).sum()),
        **ranking_metrics(y, p),
        "fpr_at_threshold": float(np.mean(p[y == 0] >= threshold)) if (y == 0).any() else float("nan"),
        "tpr_at_threshold": float(np.mean(p[y == 1] >= threshold)) if (y == 1).any() else float("nan"),
        "ece": expected_calibration_error(y, p) if both else float("nan"),
    }


def format_table(rows: Mapping[str, Mapping[str, float]], columns: Sequence[str]) -> str:
    """A plain-text table: one row per key, the given metric columns."""
    width = max([len("group")] + [len(k) for k in rows]) + 2
    lines = ["group".ljust(width) + "".join(c[:16].rjust(17) for c in columns)]
    for key, values in rows.items():
        cells = []
        for c in columns:
            v = values.get(c, float("nan"))
            cells.append(f"{v:17d}" if isinstance(v, int) else f"{v:17.4f}")
        lines.append(key.ljust(width) + "".join(cells))
    return "\n".join(lines)


def group_metrics(labels: np.ndarray, values: np.ndarray, groups: np.ndarray, threshold: float) -> dict:
    """Metrics pooled and per group: a fake group against all reals, a real group against all fakes."""
    report = {"all": metrics(labels, values, threshold)}
    for group in sorted(set(groups)):
        members = groups == group
        label = labels[members][0]
        report[str(group)] = metrics(
            labels[members | (labels != label)], values[members | (labels != label)], threshold
        )
    return report


def evaluation_report(rows: Sequence[dict], threshold: float) -> dict:
    """Per condition: fused metrics per source and per generator, and each check's AUC alone per source."""
    report: dict = {}
    for condition in dict.fromkeys(r["condition"] for r in rows):
        chosen = [r for r in rows if r["condition"] == condition]
        labels = np.array([r["sample"].label for r in chosen])
        likelihoods = row_likelihoods(chosen)
        sources = np.array([r["sample"].source for r in chosen])
        generators = np.array([r["sample"].generator for r in chosen])
        fakes = labels == 1  # each generator against all real photos
        by_generator = {
            g: metrics(labels[(generators == g) | ~fakes], likelihoods[(generators == g) | ~fakes], threshold)
            for g in sorted(set(generators[fakes]))
        }
        checks: dict[str, dict[str, float]] = {}
        for name in chosen[0]["scores"]:
            # a check that could not judge an image counts as undecided (0.5) for its AUC alone
            scores = np.array([0.5 if r["scores"].get(name) is None else r["scores"][name] for r in chosen])
            checks[name] = {"all": ranking_metrics(labels, scores)["auc"]}
            for source in sorted(set(sources[labels == 1])):
                mask = (sources == source) | (labels == 0)
                checks[name][source] = ranking_metrics(labels[mask], scores[mask])["auc"]
        report[condition] = {
            "by_source": group_metrics(labels, likelihoods, sources, threshold),
            "by_generator": by_generator,
            "check_auc": checks,
            "no_face_rate": float(np.mean([r["status"] == "no_face" for r in chosen])),
        }
    return report
