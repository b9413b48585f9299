"""Typed errors. Every message names the input it is about and what is wrong with it."""

from __future__ import annotations


class GanFaceError(Exception):
    """Base class of every error gan-face raises on purpose."""


class ImageLoadError(GanFaceError):
    """An input could not be turned into an RGB image."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class ImageNotFoundError(ImageLoadError, FileNotFoundError):
    """The path does not exist or is not a regular file."""


class NotAnImageError(ImageLoadError):
    """The bytes are not in any image format we can read (recognised by content, not by name)."""


class CorruptImageError(ImageLoadError):
    """The format was recognised but the data is damaged (truncated, bad header, empty)."""


class ImageTooLargeError(ImageLoadError):
    """The image has more pixels than allowed: a decompression bomb, or simply too big to score."""


class UnsupportedInputError(ImageLoadError, TypeError):
    """The Python object is not a type or array layout that we accept."""


class AnalysisError(GanFaceError):
    """The image loaded, but scoring it failed (a bug, or an image no part of the pipeline can handle)."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class WeightsError(GanFaceError):
    """A weights file or model card is missing, malformed or unsafe to load."""


class OutputExistsError(GanFaceError):
    """A report or model file exists and neither resuming nor overwriting was asked for."""


class TrainingDataError(GanFaceError):
    """The images given for training or fine-tuning cannot support what was asked (too few, no faces, ...)."""


class DeviceError(GanFaceError, ValueError):
    """The device asked to run the networks is not one OpenVINO has here (no such GPU, or CUDA)."""
