"""The CNNs: on the aligned face crop (evidence ``"cnn"``) and, in models that have one, on the whole frame at low
resolution (``"frame"``): their inputs, scoring images with them and what their scores say.

The architecture is EfficientNet-Lite0 (or -Lite1), defined for training in PyTorch
(:mod:`gan_face.training.network`); scoring runs the same layers from the same safetensors weights as an
OpenVINO graph (:mod:`gan_face.graphs.efficientnet`), so it needs neither torch nor an exported copy of the
weights.

The config travels with the weights in the model card and drives training and inference alike: the view
(:mod:`gan_face.views`), input size, normalisation and the crop template (where the landmarks land in the crop).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .align import Face
from .card import NETWORKS, CnnConfig, ModelCard
from .errors import WeightsError
from .result import CheckResult, learnt_evidence
from .views import cut_view

# (repeats, kernel, stride, expand ratio, in channels, out channels) of EfficientNet-Lite0's seven stages
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
#: EfficientNet-Lite1: Lite0's widths, stage depths scaled by 1.1 (first and last stage fixed, as in "lite")
LITE1_STAGES = tuple(
    (r if i in (0, 6) else math.ceil(1.1 * r), *rest) for i, (r, *rest) in enumerate(LITE0_STAGES)
)
STAGES = {"efficientnet_lite0": LITE0_STAGES, "efficientnet_lite1": LITE1_STAGES}


def crop_for_cnn(image: np.ndarray, face: Face, config: CnnConfig) -> np.ndarray:
    """The CNN's input for ``image``: its main face aligned, or the whole frame (the config's view)."""
    return cut_view(image, face.landmarks, config.view, config.input_size, np.asarray(config.crop_template))


_WHOLE_PICTURE = "The second neural network, on the whole picture (background, hair, clothes, framing),"
#: What each network's probability says, from sure-generated to camera photo (bands >= 0.9, >= 0.5, > 0.1, rest).
_EXPLANATIONS = {
    "face": (
        "The neural network finds GAN texture and shape artefacts in the face ({p:.0%}).",
        "The neural network leans towards a GAN-made face ({p:.0%}), without certainty.",
        "The neural network leans towards a camera photo ({p:.0%} GAN-like).",
        "The neural network sees a natural camera photo ({p:.0%} GAN-like).",
    ),
    "frame": (
        _WHOLE_PICTURE + " finds a generator's traces ({p:.0%}).",
        _WHOLE_PICTURE + " leans towards a generated image ({p:.0%}).",
        _WHOLE_PICTURE + " leans towards a camera photo ({p:.0%}).",
        _WHOLE_PICTURE + " sees a camera photo ({p:.0%} generated-like).",
    ),
}


def explain_cnn(probability: float, view: str = "face") -> str:
    """One line on what a network of ``view`` found, by how sure it is."""
    band = 0 if probability >= 0.9 else 1 if probability >= 0.5 else 2 if probability > 0.1 else 3
    return _EXPLANATIONS[view][band].format(p=probability)


#: Crops per network call (calls are padded to it, so an image's logit does not depend on the batch): the
#: fastest of 1, 8 and 32 for OpenVINO on these CPUs (``experiments/bench_networks.py``).
CNN_CHUNK = 8


class CnnScorer:
    """A compiled CNN and its config: scores each image that has a face, as evidence ``name`` (``"cnn"`` on the
    face, ``"frame"`` on the whole frame)."""

    def __init__(self, network, config: CnnConfig, name: str = "cnn") -> None:
        self.network = network
        self.config = config
        self.name = name

    def logits(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        if not len(crops):
            return np.zeros(0)
        batch = np.stack(crops)  # uint8 N x S x S x 3: the graph normalises them as training does
        (logits,) = self.network(batch)
        if self.config.mirror_average:
            (mirrored,) = self.network(np.ascontiguousarray(batch[:, :, ::-1]))
            logits = (logits + mirrored) / 2
        return logits.astype(np.float32)

    def score_faces(self, images: Sequence[np.ndarray], faces: Sequence[Optional[Face]]) -> list[CheckResult]:
        """A check result per image, named after this network; ``score=None`` where there is no face to look at
        (the frame network too: it was trained on, and is calibrated for, images with a face)."""
        crops = [crop_for_cnn(img, face, self.config) for img, face in zip(images, faces) if face is not None]
        return self.results(faces, self.logits(crops))

    def results(self, faces: Sequence[Optional[Face]], face_logits: np.ndarray) -> list[CheckResult]:
        """The check results of :meth:`score_faces` from the logits of the images that have a face, in order."""
        return learnt_evidence(
            self.name,
            faces,
            face_logits,
            lambda p: explain_cnn(p, self.config.view),
            "No face found, so the neural network had nothing to judge.",
        )


def card_network_state(card: ModelCard, network: str = "cnn") -> tuple[CnnConfig, dict[str, np.ndarray]]:
    """One of the card's CNNs (``"cnn"`` on the face, ``"frame"``): its config and its float32 tensors, read
    without pickle, checked against the card's sha256 and against the architecture's tensor names and shapes."""
    entry = card.networks().get(network)
    if entry is None:
        raise WeightsError(f"{card.path}: this model has no {NETWORKS.get(network, network)}")
    if entry.config.architecture not in STAGES:
        raise WeightsError(
            f"{card.path}: malformed CNN config (unknown CNN architecture {entry.config.architecture!r})"
        )
    state = {k: np.asarray(v, dtype=np.float32) if v.dtype.kind == "f" else np.asarray(v)
             for k, v in card.load_state_dict(network).items()}  # fmt: skip
    mismatch = describe_mismatch(expected_shapes(STAGES[entry.config.architecture]), state)
    if mismatch:
        raise WeightsError(
            f"{entry.weights_path}: weights do not fit the card's {entry.config.architecture} ({mismatch})"
        )
    return entry.config, state


def load_cnn(
    card: ModelCard, device: Optional[str] = None, *, network: str = "cnn", streams: int = 1
) -> CnnScorer:
    """One of the card's CNNs compiled for scoring (OpenVINO ``device``, ``streams`` inferences at once)."""
    from .graphs.efficientnet import efficientnet_lite
    from .graphs.runtime import CompiledNetwork, runtime_device

    config, state = card_network_state(card, network)
    graph = efficientnet_lite(
        state, STAGES[config.architecture], config.input_size, CNN_CHUNK, config.mean, config.std
    )
    compiled = CompiledNetwork(graph, CNN_CHUNK, runtime_device(device), streams)
    return CnnScorer(compiled, config, name=network)


def expected_shapes(stages: Sequence[tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes of an EfficientNet-Lite with ``stages`` (the training module's state dict,
    BatchNorm counters included)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(name: str, channels: int) -> None:
        for key in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{key}"] = (channels,)
        shapes[f"{name}.num_batches_tracked"] = ()

    shapes["_conv_stem.weight"] = (32, 3, 3, 3)
    bn("_bn0", 32)
    index = 0
    for repeats, kernel, _stride, expand, inp, out in stages:
        for i in range(repeats):
            block_in = inp if i == 0 else out
            mid, name = block_in * expand, f"_blocks.{index}"
            if expand != 1:
                shapes[f"{name}._expand_conv.weight"] = (mid, block_in, 1, 1)
                bn(f"{name}._bn0", mid)
            shapes[f"{name}._depthwise_conv.weight"] = (mid, 1, kernel, kernel)
            bn(f"{name}._bn1", mid)
            shapes[f"{name}._project_conv.weight"] = (out, mid, 1, 1)
            bn(f"{name}._bn2", out)
            index += 1
    shapes["_conv_head.weight"] = (1280, 320, 1, 1)
    bn("_bn1", 1280)
    shapes["_fc.weight"], shapes["_fc.bias"] = (1, 1280), (1,)
    return shapes


def describe_mismatch(expected: Mapping[str, Any], given: Mapping[str, Any], examples: int = 3) -> str:
    """One line saying how ``given`` tensors differ from a model's (``expected``: its tensors or their shapes;
    empty when they fit), naming a few."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k} {tuple(given[k].shape)} instead of {_shape(v)}"
        for k, v in expected.items()
        if k in given and tuple(given[k].shape) != _shape(v)
    ]
    parts = []
    for count_of, names in (("missing", missing), ("unexpected", unexpected), ("of the wrong shape", shapes)):
        if names:
            more = f", and {len(names) - examples} more" if len(names) > examples else ""
            parts.append(f"{len(names)} tensors {count_of}: {'; '.join(names[:examples])}{more}")
    return "; ".join(parts)


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, tuple) else tuple(value.shape)
