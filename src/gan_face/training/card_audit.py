"""Checks that a model card's measured sections say what they claim: numbers in range, the evaluation made at the
card's own threshold, and every source it was measured on kept apart from every source it was trained on.

A card is written in several steps (training, fusion fitting, evaluation, leave-one-out); a step run with the
wrong card or the wrong split leaves a card whose tables no longer describe its model. ``audit_card`` finds that.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from ..card import ModelCard

#: Conditions every evaluation must cover (``gray`` too when the model trained with grayscale augmentation).
REQUIRED_CONDITIONS = ("clean", "avatar", "laundered", "cropped")
_RATES = ("auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "fpr_at_threshold", "tpr_at_threshold", "ece")


def audit_card(card: ModelCard) -> list[str]:
    """Problems with ``card``'s ``training`` (and its clip head's and second look's), ``fusion_fit``,
    ``evaluation`` and ``leave_one_out`` sections
    (an empty list: none found)."""
    sections = card.sections
    training = sections.get("training") or {}
    trained_on = set(training.get("train_sources", ()))
    held_out = set(training.get("held_out_sources", ()))
    problems: list[str] = []
    if not trained_on:
        problems.append("training: no train_sources")
    if both := sorted(trained_on & held_out):
        problems.append(f"training: sources both trained on and held out: {both}")
    clip_training = sections.get("clip_training")
    if card.clip is not None:  # the clip head learnt from its own sources: they too stay out of what measures it
        if not clip_training or not clip_training.get("train_sources"):
            problems.append("clip_training: the model has a clip view but no record of its head's train_sources")
        else:
            trained_on = trained_on | set(clip_training["train_sources"])

    second_look_fit = sections.get("second_look_fit") or {}
    if card.second_look is not None:  # so did the second look's head
        second_sources = (second_look_fit.get("head") or {}).get("train_sources")
        if not second_sources:
            problems.append(
                "second_look_fit: the model has a second look but no record of its head's train_sources"
            )
        else:
            trained_on = trained_on | set(second_sources)

    fit = sections.get("fusion_fit")
    if fit is not None:
        problems += _apart("fusion_fit", fit.get("sources", ()), trained_on)
        if list(fit.get("features", [])) != list(card.fusion.features):
            problems.append("fusion_fit: its features are not the card's fusion features")

    evaluation = sections.get("evaluation")
    if evaluation is None:
        problems.append("no evaluation section")
    else:
        problems += _audit_evaluation(card, evaluation, trained_on, training)

    for fold in (sections.get("leave_one_out") or {}).get("folds", ()):
        where = f"leave_one_out fold {fold.get('family')!r}"
        for condition, entry in fold.get("metrics", {}).items():
            for name, metrics in entry.items():
                values = metrics.values() if name == "real_flagged_at_1pct" else _rates(metrics)
                problems += [f"{where} {condition} {name}: {v} outside [0, 1]" for v in values if not _unit(v)]
    return problems


def _audit_evaluation(card: ModelCard, evaluation: Mapping, trained_on: set, training: Mapping) -> list[str]:
    problems: list[str] = []
    if not math.isclose(evaluation.get("threshold", math.nan), card.threshold, rel_tol=0, abs_tol=1e-9):
        problems.append(f"evaluation: made at threshold {evaluation.get('threshold')}, card's is {card.threshold}")
    conditions = evaluation.get("conditions", {})
    required = REQUIRED_CONDITIONS + (("gray",) if training.get("augmentation", {}).get("p_gray") else ())
    if missing := [c for c in required if c not in conditions]:
        problems.append(f"evaluation: conditions missing: {missing}")
    for condition, result in conditions.items():
        by_source = result.get("by_source", {})
        problems += _apart(f"evaluation {condition}", [s for s in by_source if s != "all"], trained_on)
        for group, metrics in {**by_source, **result.get("by_generator", {})}.items():
            where = f"evaluation {condition} {group}"
            if metrics.get("n_real", 0) <= 0 or metrics.get("n_fake", 0) <= 0:
                problems.append(f"{where}: needs real and fake images (n_real, n_fake)")
            problems += [
                f"{where}: {k} = {metrics.get(k)} outside [0, 1]" for k in _RATES if not _unit(metrics.get(k))
            ]
    return problems


def _apart(where: str, sources: Iterable[str], trained_on: set) -> list[str]:
    overlap = sorted(set(sources) & trained_on)
    return [f"{where}: measured on sources the CNN trained on: {overlap}"] if overlap else []


def _rates(metrics: Mapping[str, Any]) -> list[Any]:
    return [metrics[k] for k in _RATES if k in metrics]


def _unit(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0
