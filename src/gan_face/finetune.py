"""Alias kept so that ``from gan_face.finetune import finetune`` keeps working; the code lives in
:mod:`gan_face.training.finetune` (needs ``gan-face[train]``)."""

from .training.finetune import FinetuneReport, FinetuneSettings, finetune

__all__ = ["FinetuneReport", "FinetuneSettings", "finetune"]
