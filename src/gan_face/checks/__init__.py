"""Forensic checks a person can verify. Each is a pure function ``check(image, face) -> CheckResult``.

``image`` is the loaded RGB ``uint8`` array, ``face`` the main :class:`~gan_face.align.Face` or ``None`` when no
face was found. A check that cannot judge the image returns ``score=None`` with an explanation saying why; the
fusion then treats that evidence as absent. ``score`` is in [0, 1] and higher means more like a GAN face; it is
evidence for the fusion, not a calibrated probability on its own.

To add a check: write ``checks/<name>.py`` with a function of that signature and add it to ``_registry``. The
fusion picks up every check named in the model card, the CLI writes a ``check_<name>`` column for each.
"""

from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Callable, Mapping, Optional

import numpy as np

from ..align import Face
from ..result import CheckResult

log = logging.getLogger(__name__)

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
