"""Alias kept so that ``from gan_face.ray_data import score_folder`` keeps working; the code lives in
:mod:`gan_face.outputs.ray_data`."""

from .outputs.ray_data import DetectorScorer, score_folder, score_paths

__all__ = ["DetectorScorer", "score_folder", "score_paths"]
