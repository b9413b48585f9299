"""gan-face: tell whether a face profile photo was made by a GAN, and show why.

>>> from gan_face import is_synthetic
>>> verdict = is_synthetic("examples/astronaut.jpg")  # also bytes, a PIL image or a numpy array
>>> verdict.likelihood, verdict.synthetic, verdict.reason

Every error gan-face raises on purpose is a :class:`GanFaceError`; the typed ones are importable from here.

Importing this package loads no model and no torch: the heavy parts load when a Detector is first built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    AnalysisError,
    CorruptImageError,
    DeviceError,
    GanFaceError,
    ImageLoadError,
    ImageNotFoundError,
    ImageTooLargeError,
    NotAnImageError,
    OutputExistsError,
    TrainingDataError,
    UnsupportedInputError,
    WeightsError,
)

__version__ = "0.1.0"
__all__ = [
    "Detector",
    "Verdict",
    "is_synthetic",
    "load_image",
    "__version__",
    # errors (gan_face.errors): the base class, then what a bad input raises, then the rest
    "GanFaceError",
    "ImageLoadError",
    "NotAnImageError",
    "CorruptImageError",
    "ImageTooLargeError",
    "ImageNotFoundError",
    "UnsupportedInputError",
    "AnalysisError",
    "WeightsError",
    "DeviceError",
    "OutputExistsError",
    "TrainingDataError",
]

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
