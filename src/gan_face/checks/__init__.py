"""Forensic checks a person can verify. Each is a pure function ``check(image, face) -> CheckResult``.

``image`` is the loaded RGB ``uint8`` array, ``face`` the main :class:`~gan_face.align.Face` or ``None`` when no
face was found. A check that cannot judge the image returns ``score=None`` with an explanation saying why; the
fusion then treats that evidence as absent. ``score`` is in [0, 1] and higher means more like a GAN face; it is
evidence for the fusion, not a calibrated probability on its own.

To add a check: write ``checks/<name>.py`` with a function of that signature and add it to :data:`CHECKS`. The
fusion picks up every check named in the model card, the CLI writes a ``check_<name>`` column for each.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping, Optional

import numpy as np

from ..align import Face

#: A rectangle ``(x0, y0, x1, y1)`` in image pixels, with a label a report can print beside it.
Region = tuple[str, tuple[float, float, float, float]]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckResult:
    """What one check found: a score, a one-line explanation, the regions it looked at, raw measurements."""

    name: str
    score: Optional[float]
    explanation: str
    regions: tuple[Region, ...] = ()
    details: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if self.score is not None and not (math.isfinite(self.score) and 0.0 <= self.score <= 1.0):
            raise ValueError(f"check {self.name!r}: score {self.score} outside [0, 1]")
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    def to_dict(self) -> dict[str, object]:
        return {
            "score": None if self.score is None else round(self.score, 6),
            "explanation": self.explanation,
            "regions": [{"label": label, "box": [round(v, 1) for v in box]} for label, box in self.regions],
            "details": {k: round(float(v), 6) for k, v in self.details.items()},
        }


Check = Callable[[np.ndarray, Optional[Face]], CheckResult]


def _registry() -> dict[str, Check]:
    from .background import background_check
    from .eyes import eye_position_check
    from .spectrum import spectrum_check
    from .symmetry import symmetry_check

    return {
        "eyes": eye_position_check,
        "symmetry": symmetry_check,
        "background": background_check,
        "spectrum": spectrum_check,
    }


#: Every forensic check by name, in report order.
CHECKS: Mapping[str, Check] = MappingProxyType(_registry())


def run_checks(image: np.ndarray, face: Optional[Face], names=None) -> dict[str, CheckResult]:
    """Run the named checks (default: all) on one image.

    A check that fails on an image (a bug, or an image it cannot handle) is logged and reported as unable to
    judge, so one piece of evidence can never sink the verdict or the batch.
    """
    selected = CHECKS.keys() if names is None else names
    results = {}
    for name in selected:
        try:
            results[name] = CHECKS[name](image, face)
        except Exception as exc:  # noqa: BLE001
            log.warning("check %s failed", name, exc_info=True)
            results[name] = CheckResult(name, None, f"This check could not be computed ({type(exc).__name__}).")
    return results
