"""MTCNN's three networks as scoring runs them (facenet-pytorch's layers, its weights from
``models/mtcnn.safetensors``); the search around them (pyramid, boxes, stages) is :mod:`gan_face._mtcnn`."""

from __future__ import annotations

import numpy as np

from .layers import State, const, conv, linear, model, opset


def _prelu(x, state: State, name: str):
    return opset().prelu(x, const(state[f"{name}.weight"]))


def _pool(x, kernel: int, stride: int):
    return opset().max_pool(x, [stride, stride], [1, 1], [0, 0], [0, 0], [kernel, kernel], "ceil_torch").output(0)


def _conv_prelu(x, state: State, name: str, prelu: str):
    return _prelu(conv(x, state[f"{name}.weight"], state[f"{name}.bias"]), state, prelu)


def _flatten_hwc(x, features: int):
    """torch's ``x.permute(0, 3, 2, 1).contiguous().view(n, -1)``: the dense layers' input order."""
    ops = opset()
    return ops.reshape(
        ops.transpose(x, opset().constant(np.array([0, 3, 2, 1], dtype=np.int64))), [-1, features], False
    )


def pnet(state: State, height: int, width: int, rows: int):
    """P-Net on ``rows x 3 x height x width`` normalised canvases: (box regression, face probabilities) maps."""
    ops = opset()
    x = ops.parameter([rows, 3, height, width], np.float32, name="x")
    y = _pool(_conv_prelu(x, state, "conv1", "prelu1"), 2, 2)
    y = _conv_prelu(_conv_prelu(y, state, "conv2", "prelu2"), state, "conv3", "prelu3")
    probs = ops.softmax(conv(y, state["conv4_1.weight"], state["conv4_1.bias"]), 1)
    reg = conv(y, state["conv4_2.weight"], state["conv4_2.bias"])
    return model([x], [reg, probs])


def rnet(state: State, rows: int):
    """R-Net on ``rows`` 24-pixel crops: (box regression, face probabilities)."""
    ops = opset()
    x = ops.parameter([rows, 3, 24, 24], np.float32, name="x")
    y = _pool(_conv_prelu(x, state, "conv1", "prelu1"), 3, 2)
    y = _pool(_conv_prelu(y, state, "conv2", "prelu2"), 3, 2)
    y = _flatten_hwc(_conv_prelu(y, state, "conv3", "prelu3"), 576)
    y = _prelu(linear(y, state["dense4.weight"], state["dense4.bias"]), state, "prelu4")
    probs = ops.softmax(linear(y, state["dense5_1.weight"], state["dense5_1.bias"]), 1)
    return model([x], [linear(y, state["dense5_2.weight"], state["dense5_2.bias"]), probs])


def onet(state: State, rows: int):
    """O-Net on ``rows`` 48-pixel crops: (box regression, landmarks, face probabilities)."""
    ops = opset()
    x = ops.parameter([rows, 3, 48, 48], np.float32, name="x")
    y = _pool(_conv_prelu(x, state, "conv1", "prelu1"), 3, 2)
    y = _pool(_conv_prelu(y, state, "conv2", "prelu2"), 3, 2)
    y = _pool(_conv_prelu(y, state, "conv3", "prelu3"), 2, 2)
    y = _flatten_hwc(_conv_prelu(y, state, "conv4", "prelu4"), 1152)
    y = _prelu(linear(y, state["dense5.weight"], state["dense5.bias"]), state, "prelu5")
    probs = ops.softmax(linear(y, state["dense6_1.weight"], state["dense6_1.bias"]), 1)
    reg = linear(y, state["dense6_2.weight"], state["dense6_2.bias"])
    marks = linear(y, state["dense6_3.weight"], state["dense6_3.bias"])
    return model([x], [reg, marks, probs])
