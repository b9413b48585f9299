"""Model cards: the one reader and writer of a model's JSON card and of its weights file.

A model is a JSON card (face-search settings, CNN config, fusion, threshold, and what was measured) and, when it
has a CNN, a ``.safetensors`` file named in the card; a model may add a second CNN on the whole frame
(``"frame_cnn"``, the same layout as ``"cnn"``, its own weights file). ``Detector(weights=...)`` takes the card's
path, the weights' path (the card is then ``<same name>.json`` beside it) or ``None`` for the model shipped in
the package.

Weights are never unpickled freely: ``.safetensors`` is plain tensors; a ``.pt``/``.pth``/``.bin`` is accepted
only if ``torch.load(..., weights_only=True)`` reads it (a restricted unpickler that admits tensors and plain
containers and refuses any payload that would run code). The card's ``sha256`` of the weights is checked before
they are read.

Every program that writes a card (training, fusion fitting, fine-tuning) builds a :class:`ModelCard` and calls
:meth:`ModelCard.save`; sections it does not know (``training``, ``evaluation``, ...) are kept as they are.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Optional

from .align import CROP_TEMPLATE, FaceSearchSettings
from .errors import WeightsError
from .fusion import Fusion

DEFAULT_MODEL = "gan-face-v3"
CARD_FORMAT = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Keys of a card that :class:`ModelCard` reads itself; every other top-level key is a free-form section.
_OWN_KEYS = (
    "format", "name", "description", "detector", "cnn", "frame_cnn", "clip", "second_look", "fusion", "threshold"
)  # fmt: skip
#: The learnt evidence: the CNN on the aligned face (card key ``"cnn"``) and the optional one on the whole
#: frame (``"frame_cnn"``), by the evidence name each one's score has in the fusion and the reports.
NETWORKS = {"cnn": "cnn", "frame": "frame_cnn"}


@dataclass(frozen=True)
class CnnConfig:
    """What the CNN is and what it sees: architecture, input size, normalisation and the crop template (where
    the landmarks land in the crop). Training and scoring both read it from the card, so they cannot drift."""

    architecture: str = "efficientnet_lite0"
    input_size: int = 160
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_template: tuple[tuple[float, float], ...] = field(
        default_factory=lambda: tuple(map(tuple, CROP_TEMPLATE.tolist()))  # type: ignore[arg-type]
    )
    dropout: float = 0.2
    #: Score each crop and its mirror image and average the two logits (the model trains with flips). Measured
    #: on the held-out test half with gan-face-v1: AUC +0.003 to +0.007 per condition, TPR at 1% FPR within
    #: noise, scanning 25% slower (30 instead of 39 avatars/s), so the shipped card leaves it off.
    mirror_average: bool = False
    #: What the network sees (:mod:`gan_face.views`): ``"face"``, the aligned crop, or ``"frame"``, the whole
    #: image's centred square at ``input_size`` (the crop template is then unused).
    view: str = "face"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        data["crop_template"] = [list(p) for p in self.crop_template]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CnnConfig":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        if "crop_template" in known:
            known["crop_template"] = tuple(tuple(float(v) for v in p) for p in known["crop_template"])
        return cls(**known)


@dataclass(frozen=True)
class Network:
    """One CNN of a model: what it is and sees (its config) and its weights file with that file's sha256."""

    config: CnnConfig
    weights_path: Path
    sha256: Optional[str] = None

    def to_dict(self, card_path: Optional[Path]) -> dict[str, Any]:
        beside = card_path is not None and self.weights_path.resolve().parent == card_path.resolve().parent
        return {
            "weights": self.weights_path.name if beside else str(self.weights_path.resolve()),
            "sha256": self.sha256,
            "config": self.config.to_dict(),
        }

    @classmethod
    def from_dict(
        cls, entry: Mapping[str, Any], card_path: Path, weights_path: Optional[Path] = None
    ) -> "Network":
        # a relative name is beside the card; an absolute one (a card in a work folder) is kept
        return cls(
            CnnConfig.from_dict(dict(entry["config"])),
            weights_path or card_path.parent / str(entry["weights"]),
            entry.get("sha256"),
        )


#: OpenVINO's own activation group for int8 layers (:class:`gan_face.clip.ClipEncoder`).
DEFAULT_GROUP_SIZE = 32


@dataclass(frozen=True)
class ClipConfig:
    """What the clip view reads: the frozen encoder's input (the whole frame's centred square, or the aligned face,
    at ``input_size``) and the blocks whose CLS tokens the linear head reads (the encoder runs up to the last)."""

    input_size: int = 160
    blocks: tuple[int, ...] = tuple(range(12))
    view: str = "frame"
    #: activations quantised to int8 per group of this many channels (:class:`gan_face.clip.ClipEncoder`)
    group_size: int = DEFAULT_GROUP_SIZE
    crop_template: tuple[tuple[float, float], ...] = field(
        default_factory=lambda: tuple(map(tuple, CROP_TEMPLATE.tolist()))  # type: ignore[arg-type]
    )

    def __post_init__(self) -> None:
        if self.input_size % 16 or not 32 <= self.input_size <= 224:
            raise ValueError(f"clip input_size {self.input_size}: a multiple of 16 between 32 and 224")
        if not self.blocks or sorted(set(self.blocks)) != list(self.blocks) or not 0 <= self.blocks[0] < 12:
            raise ValueError(f"clip blocks {self.blocks}: increasing block indices in 0..11")
        if self.blocks[-1] > 11:
            raise ValueError(f"clip blocks {self.blocks}: increasing block indices in 0..11")
        if self.group_size < 1:
            raise ValueError(f"clip group_size {self.group_size}: a positive number of channels")

    @property
    def depth(self) -> int:
        """How many transformer blocks the encoder runs."""
        return self.blocks[-1] + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "blocks": list(self.blocks),
            "view": self.view,
            # written when it is not OpenVINO's default, so cards made before it was a choice stay as they were
            **({"group_size": self.group_size} if self.group_size != DEFAULT_GROUP_SIZE else {}),
            "crop_template": [list(p) for p in self.crop_template],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ClipConfig":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if "blocks" in known:
            known["blocks"] = tuple(int(b) for b in known["blocks"])
        if "crop_template" in known:
            known["crop_template"] = tuple(tuple(float(v) for v in p) for p in known["crop_template"])
        return cls(**known)


@dataclass(frozen=True)
class ClipNetwork:
    """A model's clip view: its config, the frozen encoder's weights file and the linear head's, with sha256s.

    The encoder (86 MB) is shared by every card that uses it: a card names it, and it is found beside the card or
    among the shipped models, so a fine-tuned card never copies it."""

    config: ClipConfig
    encoder_path: Path
    head_path: Path
    encoder_sha256: Optional[str] = None
    head_sha256: Optional[str] = None

    def to_dict(self, card_path: Optional[Path]) -> dict[str, Any]:
        return {
            "encoder": _relative_name(self.encoder_path, card_path),
            "encoder_sha256": self.encoder_sha256,
            "head": _relative_name(self.head_path, card_path),
            "head_sha256": self.head_sha256,
            "config": self.config.to_dict(),
        }

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any], card_path: Path) -> "ClipNetwork":
        return cls(
            ClipConfig.from_dict(dict(entry["config"])),
            _find_weights(str(entry["encoder"]), card_path),
            _find_weights(str(entry["head"]), card_path),
            entry.get("encoder_sha256"),
            entry.get("head_sha256"),
        )


@dataclass(frozen=True)
class SecondLook:
    """A costlier second look for the images the first one leaves near the line (:mod:`gan_face.detector`): the
    clip encoder again, at a higher resolution, read by a head of its own (evidence ``"second_look"``), for the
    images whose first likelihood lies in ``[band_from, threshold)``. Their likelihood is then ``fusion``'s: every
    first-look feature and the second look, fitted on calibration images of that band and placed so that the
    card's threshold is its operating point by the card's rule (``scripts/fit_second_look.py``)."""

    clip: ClipNetwork
    fusion: Fusion
    band_from: float

    def to_dict(self, card_path: Optional[Path]) -> dict[str, Any]:
        return {"from": self.band_from, "clip": self.clip.to_dict(card_path), "fusion": self.fusion.to_dict()}

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any], card_path: Path) -> "SecondLook":
        return cls(ClipNetwork.from_dict(entry["clip"], card_path), Fusion.from_dict(entry["fusion"]),
                   float(entry["from"]))  # fmt: skip


def _relative_name(path: Path, card_path: Optional[Path]) -> str:
    """A weights file as a card names it: its bare name when it sits beside the card or among the shipped
    models, else its absolute path."""
    folders = [shipped_card_path(DEFAULT_MODEL).parent.resolve()]
    if card_path is not None:
        folders.insert(0, card_path.resolve().parent)
    return path.name if path.resolve().parent in folders else str(path.resolve())


def _find_weights(name: str, card_path: Path) -> Path:
    beside = card_path.parent / name
    if beside.exists() or Path(name).is_absolute():
        return beside
    shipped = shipped_card_path(DEFAULT_MODEL).parent / name
    return shipped if shipped.exists() else beside


@dataclass(frozen=True)
class ModelCard:
    """A parsed, validated model card; ``sections`` holds the free-form parts. ``face`` is the CNN on the aligned
    face (the card's ``"cnn"``, evidence ``"cnn"``) and ``frame`` the optional second CNN, on the whole frame
    (``"frame_cnn"``, evidence ``"frame"``); each a :class:`Network`, its weights' path resolved."""

    name: str
    fusion: Fusion
    threshold: float
    face_search: FaceSearchSettings = FaceSearchSettings()
    face: Optional[Network] = None
    description: str = ""
    sections: Mapping[str, Any] = field(default_factory=dict)
    path: Optional[Path] = None  # where it was read from or last saved
    frame: Optional[Network] = None
    clip: Optional[ClipNetwork] = None
    second_look: Optional[SecondLook] = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold {self.threshold} outside [0, 1]")
        edge = self.cant_tell_from
        if not 0.0 <= edge <= self.threshold:
            raise ValueError(f"answers: cant_tell_from {edge} outside [0, threshold {self.threshold}]")
        if self.frame is not None and self.frame.config.view != "frame":
            raise ValueError(f"frame_cnn must see the frame, its config says view={self.frame.config.view!r}")
        if self.second_look is not None and not 0.0 <= self.second_look.band_from <= self.threshold:
            raise ValueError(f"second_look: from {self.second_look.band_from} outside [0, threshold]")

    # ------------------------------------------------------------------------------------------------ reading

    @classmethod
    def load(cls, weights: str | os.PathLike[str] | None = None) -> "ModelCard":
        """Read a card: ``None`` for the default model, a shipped model's name (``"gan-face-v1"``), else a card
        (``.json``) or a weights file's path."""
        name = DEFAULT_MODEL if weights is None else str(weights)
        if name in shipped_models():
            card_path, weights_given = shipped_card_path(name), None
        else:
            given = Path(weights)
            if not given.exists():
                raise WeightsError(f"{given}: no such file")
            card_path = given if given.suffix == ".json" else given.with_suffix(".json")
            if not card_path.exists():
                raise WeightsError(f"{given}: its model card {card_path.name} is missing beside it")
            weights_given = None if given.suffix == ".json" else given
        try:
            raw = json.loads(card_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WeightsError(f"{card_path}: not a readable model card ({exc})") from None
        card = cls.from_dict(raw, card_path, weights_given)
        weights_files = [network.weights_path for network in card.networks().values()]
        for clip in (card.clip, card.second_look and card.second_look.clip):
            if clip is not None:
                weights_files += [clip.encoder_path, clip.head_path]
        for path in weights_files:
            if not path.exists():
                raise WeightsError(f"{card_path}: its weights file {path} is missing")
        return card

    @classmethod
    def from_dict(cls, raw: Any, card_path: Path, weights_path: Optional[Path] = None) -> "ModelCard":
        """Parse and validate a card's JSON object; ``WeightsError`` names the card and the problem."""
        if not isinstance(raw, dict) or raw.get("format") != CARD_FORMAT:
            raise WeightsError(f"{card_path}: not a gan-face model card (format {CARD_FORMAT})")
        try:
            face = None if raw.get("cnn") is None else Network.from_dict(raw["cnn"], card_path, weights_path)
            frame = None if raw.get("frame_cnn") is None else Network.from_dict(raw["frame_cnn"], card_path)
            clip = None if raw.get("clip") is None else ClipNetwork.from_dict(raw["clip"], card_path)
            second = raw.get("second_look")
            second_look = None if second is None else SecondLook.from_dict(second, card_path)
            return cls(
                name=str(raw.get("name", card_path.stem)),
                description=str(raw.get("description", "")),
                fusion=Fusion.from_dict(raw["fusion"]),
                threshold=float(raw["threshold"]),
                face_search=FaceSearchSettings.from_dict(raw["detector"]),  # the card's key since v1
                face=face,
                sections={k: v for k, v in raw.items() if k not in _OWN_KEYS},
                path=card_path,
                frame=frame,
                clip=clip,
                second_look=second_look,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"{card_path}: malformed model card ({exc!r})") from None

    @property
    def cant_tell_from(self) -> float:
        """The lower edge of the "can't tell" band below the threshold: the card's ``answers`` section (fitted on
        calibration data, with its shares stated there), else even odds (0.5, or the threshold if lower): a
        likelihood that leans towards a generator but is not flagged is never called a camera photo."""
        answers = self.sections.get("answers")
        return float(answers["cant_tell_from"]) if answers else min(0.5, self.threshold)

    def fusion_for(self, scores: Mapping[str, Optional[float]]) -> Fusion:
        """The fusion that gives the likelihood of an image with these scores: the second look's if the image got
        one (its ``"second_look"`` score is there), else the card's."""
        if self.second_look is not None and scores.get("second_look") is not None:
            return self.second_look.fusion
        return self.fusion

    def networks(self) -> dict[str, Network]:
        """The model's CNNs by evidence name (:data:`NETWORKS`): ``"cnn"`` on the face, ``"frame"`` if any."""
        found = {}
        if self.face is not None:
            found["cnn"] = self.face
        if self.frame is not None:
            found["frame"] = self.frame
        return found

    # the face CNN's old flat fields, read-only, kept for a release: read ``face`` instead
    @property
    def cnn(self) -> Optional[CnnConfig]:
        """The face CNN's config: ``face.config`` (an alias kept for a release)."""
        return None if self.face is None else self.face.config

    @property
    def weights_path(self) -> Optional[Path]:
        """The face CNN's weights file: ``face.weights_path`` (an alias kept for a release)."""
        return None if self.face is None else self.face.weights_path

    @property
    def weights_sha256(self) -> Optional[str]:
        """The face CNN's weights' sha256: ``face.sha256`` (an alias kept for a release)."""
        return None if self.face is None else self.face.sha256

    def load_state_dict(self, network: str = "cnn") -> dict[str, Any]:
        """A CNN's tensors as numpy arrays, after checking them against the card's sha256 (float16 stays as
        stored)."""
        entry = self.networks().get(network)
        if entry is None:
            raise WeightsError(f"{self.path}: this model has no {NETWORKS.get(network, network)} weights")
        if entry.sha256 and file_sha256(entry.weights_path) != entry.sha256:
            name = self.path.name if self.path else "its card"
            raise WeightsError(f"{entry.weights_path}: does not match the sha256 in {name}")
        return load_state_dict(entry.weights_path)

    def load_clip_state(self, network: Optional[ClipNetwork] = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The clip view's encoder and head tensors (or ``network``'s: the second look's), each checked against
        the card's sha256 first."""
        network = network or self.clip
        if network is None:
            raise WeightsError(f"{self.path}: this model has no clip view")
        name = self.path.name if self.path else "its card"
        for path, expected in ((network.encoder_path, network.encoder_sha256),
                               (network.head_path, network.head_sha256)):  # fmt: skip
            if not expected:
                raise WeightsError(f"{self.path}: the clip view's {path.name} has no sha256 in the card")
            if file_sha256(path) != expected:
                raise WeightsError(f"{path}: does not match the sha256 in {name}")
        return load_state_dict(network.encoder_path), load_state_dict(network.head_path)

    # ------------------------------------------------------------------------------------------------ writing

    def replace(self, **changes: Any) -> "ModelCard":
        return dataclasses.replace(self, **changes)

    def with_weights(self, weights_path: str | os.PathLike[str]) -> "ModelCard":
        """This card's face CNN reading ``weights_path``, with that file's sha256."""
        if self.face is None:
            raise ValueError(f"{self.name}: a card without a face CNN has no weights to point elsewhere")
        path = Path(weights_path)
        return self.replace(face=dataclasses.replace(self.face, weights_path=path, sha256=file_sha256(path)))

    def with_sections(self, **sections: Any) -> "ModelCard":
        """This card with sections added or replaced (``None`` removes one)."""
        merged = {**self.sections, **sections}
        return self.replace(sections={k: v for k, v in merged.items() if v is not None})

    def to_dict(self, card_path: Optional[Path] = None) -> dict[str, Any]:
        data: dict[str, Any] = {"format": CARD_FORMAT, "name": self.name}
        if self.description:
            data["description"] = self.description
        data["detector"] = self.face_search.to_dict()
        for name, network in self.networks().items():
            data[NETWORKS[name]] = network.to_dict(card_path)
        if self.clip is not None:
            data["clip"] = self.clip.to_dict(card_path)
        if self.second_look is not None:
            data["second_look"] = self.second_look.to_dict(card_path)
        data["fusion"] = self.fusion.to_dict()
        data["threshold"] = self.threshold  # unrounded: rounding down could flag one more real photo
        data.update(self.sections)
        return data

    def save(self, path: str | os.PathLike[str]) -> "ModelCard":
        """Write the card to ``path`` (atomically) and return it as saved. Weights beside it are named
        relatively, others by absolute path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(path.name + ".tmp")
        staging.write_text(json.dumps(self.to_dict(path), indent=2) + "\n", encoding="utf-8")
        os.replace(staging, path)
        return self.replace(path=path)


def default_card_path() -> Path:
    return shipped_card_path(DEFAULT_MODEL)


def shipped_card_path(name: str) -> Path:
    return Path(str(resources.files("gan_face.models").joinpath(f"{name}.json")))


def shipped_models() -> tuple[str, ...]:
    """Names of the models installed with the package (``--weights NAME`` loads one)."""
    folder = resources.files("gan_face.models")
    return tuple(sorted(f.name[: -len(".json")] for f in folder.iterdir() if f.name.endswith(".json")))


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Tensors from a weights file as numpy arrays, without ever unpickling code (see the module docstring).
    Torch is imported only for a ``.pt``/``.pth``/``.bin`` file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: not a valid safetensors file ({exc})") from None
    if path.suffix in (".pt", ".pth", ".bin"):
        try:
            import torch
        except ImportError:  # torch is the [train] extra, not a dependency of scoring
            raise WeightsError(
                f'{path}: reading a torch file needs torch (pip install "gan-face[train]"); '
                "or convert it to .safetensors"
            ) from None

        try:
            with warnings.catch_warnings():  # torch's advice to file an issue is noise before a refusal
                warnings.simplefilter("ignore")
                state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for refused payloads
            raise WeightsError(
                f"{path}: refused; it cannot be loaded with weights_only=True, so it may carry code "
                f"({type(exc).__name__}). Convert it to .safetensors."
            ) from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise WeightsError(f"{path}: expected a flat state dict of tensors")
        return {k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in state.items()}
    raise WeightsError(f"{path}: unknown weights format (use .safetensors)")


def save_weights(state: Mapping[str, Any], path: str | os.PathLike[str], metadata: Optional[dict] = None) -> Path:
    """Weights as float16 safetensors (half the size; scoring casts back to float32), readable by all users."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: (v.half() if v.is_floating_point() and "running" not in k else v).contiguous() for k, v in state.items()
    }
    # one metadata entry: safetensors writes its metadata map in a random order per process, so two keys made
    # the same weights a different file (and sha256) from run to run
    folded = {"gan_face": json.dumps({k: str(v) for k, v in (metadata or {}).items()}, sort_keys=True)}
    save_file(tensors, str(path), metadata=folded if metadata else None)
    os.chmod(path, 0o666 & ~_umask())  # as any file the user writes (safetensors' own file is owner-only)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
