"""The evaluation protocol of DESIGN.md: image conditions and metrics. Needs scikit-learn (``gan-face[train]``).

Conditions (each reported separately):

* ``clean``: the file as it is.
* ``avatar``: square centre crop, 400x400, JPEG quality 85: what a social network does to a profile photo.
* ``laundered``: resized to one of 256/300/384/512/640/768/1024 px and re-encoded at JPEG quality one of
  30/50/70/80/90/95 (the StyleGAN3 detection challenge protocol), chosen per image from a seeded generator.
* ``cropped``: a random crop keeping 70-95% of each side, resized back: defeats the eye template.

Every random choice comes from a generator seeded with the image's index, so a condition is the same image in
every run and for every model.
"""

from __future__ import annotations

import io
import math
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

CONDITIONS = ("clean", "avatar", "laundered", "cropped")
LAUNDER_SIZES = (256, 300, 384, 512, 640, 768, 1024)
LAUNDER_QUALITIES = (30, 50, 70, 80, 90, 95)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((int(width), int(height)), Image.LANCZOS))


def apply_condition(image: np.ndarray, condition: str, seed: int) -> np.ndarray:
    """``image`` as it would look under ``condition`` (see the module docstring)."""
    return condition_with_transform(image, condition, seed)[0]


def condition_with_transform(image: np.ndarray, condition: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The conditioned image and the ``2 x 3`` matrix taking original pixel coordinates to the new image's."""
    rng = np.random.default_rng(seed)
    height, width = image.shape[:2]
    if condition == "clean":
        return image, np.array([[1.0, 0, 0], [0, 1.0, 0]])
    if condition == "avatar":
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = image[top : top + side, left : left + side]
        scale = 400 / side
        return jpeg_roundtrip(resize(square, 400, 400), 85), np.array([[scale, 0, -left * scale], [0, scale, -top * scale]])
    if condition == "laundered":
        target = int(rng.choice(LAUNDER_SIZES))
        scale = target / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        resized = resize(image, new_w, new_h)
        matrix = np.array([[new_w / width, 0, 0], [0, new_h / height, 0]])
        return jpeg_roundtrip(resized, int(rng.choice(LAUNDER_QUALITIES))), matrix
    if condition == "cropped":
        keep_w, keep_h = rng.uniform(0.70, 0.95, size=2)
        crop_w, crop_h = max(1, round(width * keep_w)), max(1, round(height * keep_h))
        left = int(rng.integers(0, width - crop_w + 1))
        top = int(rng.integers(0, height - crop_h + 1))
        sx, sy = width / crop_w, height / crop_h
        matrix = np.array([[sx, 0, -left * sx], [0, sy, -top * sy]])
        return resize(image[top : top + crop_h, left : left + crop_w], width, height), matrix
    raise ValueError(f"unknown condition {condition!r}; expected one of {CONDITIONS}")


def tpr_at_fpr(labels: Sequence[int], scores: Sequence[float], max_fpr: float) -> float:
    """Share of fakes flagged at the strictest threshold that flags at most ``max_fpr`` of the reals."""
    from .fusion import threshold_at_fpr

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


def metrics(labels: Sequence[int], likelihoods: Sequence[float], threshold: float) -> dict[str, float]:
    """AUC, TPR at 1% and 0.1% FPR, FPR and TPR at ``threshold``, calibration error, counts."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels)
    p = np.asarray(likelihoods, dtype=np.float64)
    both = (y == 0).any() and (y == 1).any()
    return {
        "n_real": int((y == 0).sum()),
        "n_fake": int((y == 1).sum()),
        "auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "tpr_at_1pct_fpr": tpr_at_fpr(y, p, 0.01),
        "tpr_at_0.1pct_fpr": tpr_at_fpr(y, p, 0.001),
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


def score_samples(detector, samples: Sequence, conditions: Sequence[str], *, batch_size: int = 32,
                  progress: bool = True) -> list[dict]:
    """Run ``detector`` on every sample under every condition (the full pipeline: detection, CNN, checks).

    Returns one row per (sample, condition): the sample, the condition, the fused likelihood, each check's score
    and the status. The condition of sample ``i`` is seeded with ``i``, so every model sees the same images.
    """
    from tqdm import tqdm

    from .io import load_image

    rows: list[dict] = []
    work = [(i, s, c) for c in conditions for i, s in enumerate(samples)]
    for start in tqdm(range(0, len(work), batch_size), desc="scoring", unit="batch", disable=not progress):
        chunk = work[start : start + batch_size]
        images = [apply_condition(load_image(s.path), c, seed=i) for i, s, c in chunk]
        for (_, sample, condition), verdict in zip(chunk, detector.score_arrays(images)):
            rows.append(
                {
                    "sample": sample,
                    "condition": condition,
                    "likelihood": verdict.likelihood,
                    "status": verdict.status,
                    "scores": {name: result.score for name, result in verdict.checks.items()},
                }
            )
    return rows


def group_metrics(labels: np.ndarray, values: np.ndarray, groups: np.ndarray, threshold: float) -> dict:
    """Metrics pooled and per group: a fake group against all reals, a real group against all fakes."""
    report = {"all": metrics(labels, values, threshold)}
    for group in sorted(set(groups)):
        members = groups == group
        label = labels[members][0]
        report[str(group)] = metrics(labels[members | (labels != label)], values[members | (labels != label)], threshold)
    return report


def evaluation_report(rows: Sequence[dict], threshold: float) -> dict:
    """Per condition: fused metrics per source and per generator, and each check's AUC alone per source."""
    from sklearn.metrics import roc_auc_score

    report: dict = {}
    for condition in dict.fromkeys(r["condition"] for r in rows):
        chosen = [r for r in rows if r["condition"] == condition]
        labels = np.array([r["sample"].label for r in chosen])
        likelihoods = np.array([r["likelihood"] for r in chosen])
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
            checks[name] = {"all": float(roc_auc_score(labels, scores))}
            for source in sorted(set(sources[labels == 1])):
                mask = (sources == source) | (labels == 0)
                checks[name][source] = float(roc_auc_score(labels[mask], scores[mask]))
        report[condition] = {
            "by_source": group_metrics(labels, likelihoods, sources, threshold),
            "by_generator": by_generator,
            "check_auc": checks,
            "no_face_rate": float(np.mean([r["status"] == "no_face" for r in chosen])),
        }
    return report


def save_rows(rows: Sequence[dict], path) -> None:
    """Scored rows as JSON lines (sample fields, condition, likelihood, status, every check's score)."""
    import json
    from dataclasses import asdict

    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({**row, "sample": asdict(row["sample"])}) + "\n")


def load_rows(path) -> list[dict]:
    import json

    from .datasets import Sample

    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            row["sample"] = Sample(**row["sample"])
            rows.append(row)
    return rows
