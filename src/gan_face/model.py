"""Model cards and safe weight loading.

A model is a JSON card (detector settings, CNN config, fusion, threshold, metrics) and, when it has a CNN, a
``.safetensors`` file named in the card. ``Detector(weights=...)`` takes the card's path, the weights' path
(the card is then ``<same name>.json`` beside it) or ``None`` for the model shipped in the package.

Weights are never unpickled freely: ``.safetensors`` is plain tensors; a ``.pt``/``.pth``/``.bin`` is accepted
only if ``torch.load(..., weights_only=True)`` reads it (a restricted unpickler that admits tensors and plain
containers and refuses any payload that would run code). The card's ``sha256`` of the weights is checked.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Optional

from .errors import WeightsError
from .fusion import Fusion

DEFAULT_MODEL = "gan-face-v1"
CARD_FORMAT = 1


@dataclass(frozen=True)
class ModelCard:
    name: str
    card_path: Path
    fusion: Fusion
    threshold: float
    detector: Mapping[str, Any]
    cnn: Optional[Mapping[str, Any]] = None  # CNN config (architecture, input size, normalisation) or None
    weights_path: Optional[Path] = None
    raw: Mapping[str, Any] = field(default_factory=dict)


def default_card_path() -> Path:
    return Path(str(resources.files("gan_face.models").joinpath(f"{DEFAULT_MODEL}.json")))


def load_model_card(weights: str | os.PathLike[str] | None = None) -> ModelCard:
    """Read a model card: ``None`` for the shipped model, else a card (``.json``) or weights file path."""
    if weights is None:
        card_path = default_card_path()
    else:
        given = Path(weights)
        if not given.exists():
            raise WeightsError(f"{given}: no such file")
        card_path = given if given.suffix == ".json" else given.with_suffix(".json")
        if not card_path.exists():
            raise WeightsError(f"{given}: its model card {card_path.name} is missing beside it")
    try:
        raw = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{card_path}: not a readable model card ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != CARD_FORMAT:
        raise WeightsError(f"{card_path}: not a gan-face model card (format {CARD_FORMAT})")
    try:
        fusion = Fusion.from_dict(raw["fusion"])
        threshold = float(raw["threshold"])
        detector = {"detect_size": int(raw["detector"]["detect_size"]),
                    "min_face_size": int(raw["detector"]["min_face_size"])}
        cnn = raw.get("cnn")
        weights_path = None
        if cnn is not None:
            if weights is not None and Path(weights).suffix != ".json":
                weights_path = Path(weights)
            else:
                weights_path = card_path.parent / str(cnn["weights"])
            dict(cnn["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{card_path}: malformed model card ({exc!r})") from None
    if not 0.0 <= threshold <= 1.0:
        raise WeightsError(f"{card_path}: threshold {threshold} outside [0, 1]")
    if weights_path is not None and not weights_path.exists():
        raise WeightsError(f"{card_path}: its weights file {weights_path} is missing")
    return ModelCard(
        name=str(raw.get("name", card_path.stem)),
        card_path=card_path,
        fusion=fusion,
        threshold=threshold,
        detector=detector,
        cnn=cnn,
        weights_path=weights_path,
        raw=raw,
    )


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Tensors from a weights file, without ever unpickling code (see the module docstring)."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: not a valid safetensors file ({exc})") from None
    if path.suffix in (".pt", ".pth", ".bin"):
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for refused payloads
            raise WeightsError(
                f"{path}: refused; it cannot be loaded with weights_only=True, so it may carry code "
                f"({type(exc).__name__}). Convert it to .safetensors."
            ) from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise WeightsError(f"{path}: expected a flat state dict of tensors")
        return state
    raise WeightsError(f"{path}: unknown weights format (use .safetensors)")


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
