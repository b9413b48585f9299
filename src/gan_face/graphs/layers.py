"""The graph operations the architectures share: OpenVINO's operator set, float32 constants, convolutions, dense
layers (``x @ W.T + b``, torch's layout), a BatchNorm folded into the convolution before it, and a model from its
inputs and outputs."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .runtime import openvino

#: A network's tensors by name (as its weights file stores them).
State = Mapping[str, np.ndarray]


def opset():
    """OpenVINO's operator set the graphs are built with (imported through :func:`~.runtime.openvino`)."""
    openvino()
    import openvino.opset15 as ops

    return ops


def model(inputs, outputs):
    return openvino().Model([o if hasattr(o, "get_element_type") else o.output(0) for o in outputs], inputs)


def const(array: np.ndarray):
    return opset().constant(np.ascontiguousarray(array, dtype=np.float32))


def conv(x, weight: np.ndarray, bias: np.ndarray | None, stride: int = 1, pads=((0, 0), (0, 0)), groups: int = 1):
    ops = opset()
    begin, end = [p[0] for p in pads], [p[1] for p in pads]
    if groups == 1:
        y = ops.convolution(x, const(weight), [stride, stride], begin, end, [1, 1])
    else:
        kernel = weight.reshape(groups, weight.shape[0] // groups, *weight.shape[1:])
        y = ops.group_convolution(x, const(kernel), [stride, stride], begin, end, [1, 1])
    if bias is not None:
        y = ops.add(y, const(bias.reshape(1, -1, 1, 1)))
    return y


def linear(x, weight: np.ndarray, bias: np.ndarray):
    ops = opset()
    return ops.add(ops.matmul(x, const(weight), False, True), const(bias.reshape(1, -1)))


def fold_batchnorm(weight: np.ndarray, bn: Mapping[str, np.ndarray], eps: float = 1e-3):
    """A convolution's weight and bias with the BatchNorm after it folded in (as torch's ``fuse_conv_bn_eval``)."""
    scale = bn["weight"] / np.sqrt(bn["running_var"] + np.float32(eps))
    folded = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    return folded.astype(np.float32), (bn["bias"] - bn["running_mean"] * scale).astype(np.float32)
