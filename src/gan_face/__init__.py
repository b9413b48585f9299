"""gan-face: tell whether a face profile photo was made by a GAN, and show why.

>>> from gan_face import is_synthetic
>>> verdict = is_synthetic("avatar.jpg")          # also bytes, a PIL image or a numpy array
>>> verdict.likelihood, verdict.synthetic, verdict.checks["eyes"].explanation

Importing this package loads no model and no torch: the heavy parts load when a Detector is first built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import GanFaceError

__version__ = "0.1.0"
__all__ = ["Detector", "GanFaceError", "Verdict", "is_synthetic", "load_image", "__version__"]

if TYPE_CHECKING:
    from .detector import Detector, is_synthetic
    from .io import load_image
    from .result import Verdict

_LAZY = {
    "Detector": "detector",
    "is_synthetic": "detector",
    "Verdict": "result",
    "load_image": "io",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
