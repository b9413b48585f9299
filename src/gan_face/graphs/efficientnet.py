"""EfficientNet-Lite as scoring runs it (the face and frame CNNs): :mod:`gan_face.training.network`'s layers,
BatchNorm folded, from the same tensors."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .layers import State, const, conv, fold_batchnorm, linear, model, opset


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same" padding of one axis (the extra pixel at the end), as the training network pads."""
    if stride == 1:
        return kernel // 2, kernel // 2
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def efficientnet_lite(
    state: State,
    stages: Sequence[tuple[int, ...]],
    input_size: int,
    rows: int,
    mean: Sequence[float],
    std: Sequence[float],
):
    """EfficientNet-Lite (:mod:`gan_face.training.network`'s layer names) with BatchNorm folded: ``rows x S x S
    x 3`` ``uint8`` crops -> ``rows`` logits.

    The crops are normalised in the graph as training's preprocessing does it (``(x / 255 - mean) / std``, then
    channels first): in numpy that was a fifth of the face CNN's time, in the graph it is fused into the stem.
    """
    ops = opset()

    def bn(prefix: str) -> dict[str, np.ndarray]:
        return {k: state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}

    def conv_bn(x, size: int, name: str, norm: str, stride: int = 1, groups: int = 1, relu: bool = True):
        weight, bias = fold_batchnorm(state[f"{name}.weight"], bn(norm))
        pads = _same_pads(size, weight.shape[-1], stride)
        y = conv(x, weight, bias, stride, (pads, pads), groups)
        return (ops.clamp(y, 0.0, 6.0) if relu else y), math.ceil(size / stride)

    x = ops.parameter([rows, input_size, input_size, 3], np.uint8, name="x")
    unit = ops.divide(ops.convert(x, np.float32), const(np.array(255.0)))
    normalised = ops.divide(ops.subtract(unit, const(np.asarray(mean))), const(np.asarray(std)))
    channels_first = ops.transpose(normalised, ops.constant(np.array([0, 3, 1, 2], dtype=np.int64)))
    y, size = conv_bn(channels_first, input_size, "_conv_stem", "_bn0", stride=2)
    index = 0
    for repeats, kernel, stride, expand, inp, out in stages:
        for i in range(repeats):
            name, block_in, step = f"_blocks.{index}", y, stride if i == 0 else 1
            mid = (inp if i == 0 else out) * expand
            if expand != 1:
                y, _ = conv_bn(y, size, f"{name}._expand_conv", f"{name}._bn0")
            y, new_size = conv_bn(y, size, f"{name}._depthwise_conv", f"{name}._bn1", stride=step, groups=mid)
            y, _ = conv_bn(y, new_size, f"{name}._project_conv", f"{name}._bn2", relu=False)
            if step == 1 and (inp if i == 0 else out) == out:
                y = ops.add(block_in, y)
            size, index = new_size, index + 1
    y, _ = conv_bn(y, size, "_conv_head", "_bn1")
    pooled = ops.reduce_mean(y, opset().constant(np.array([2, 3], dtype=np.int64)), False)
    logits = ops.reshape(linear(pooled, state["_fc.weight"], state["_fc.bias"]), [rows], False)
    return model([x], [logits])
