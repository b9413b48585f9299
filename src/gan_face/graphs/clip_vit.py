"""CLIP ViT-B/16's image tower as scoring runs it (the clip view's frozen encoder, :mod:`gan_face.clip`): OpenAI's
weights with int8 linear layers (``models/clip-vit-b16.safetensors``), at any input size a multiple of 16."""

from __future__ import annotations

import math

import numpy as np

from .layers import State, const, conv, model, opset

#: CLIP's pixel normalisation (OpenAI's preprocessing of the image tower).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_PATCH = 16
CLIP_HEADS = 12


def clip_positions(position: np.ndarray, grid: int) -> np.ndarray:
    """CLIP's position embeddings (the CLS position, then a square grid: 14x14 at 224 px) resized to another
    grid (10x10 at 160 px) by bicubic interpolation of each channel, as ViTs are run at other resolutions."""
    from PIL import Image

    cls, patches = position[:1], position[1:]
    side = int(round(math.sqrt(len(patches))))
    if grid == side:
        return position.astype(np.float32)
    planes = patches.reshape(side, side, -1)
    resized = [
        np.asarray(Image.fromarray(planes[:, :, c].astype(np.float32), "F").resize((grid, grid), Image.BICUBIC))
        for c in range(planes.shape[-1])
    ]
    return np.concatenate([cls, np.stack(resized, -1).reshape(grid * grid, -1)]).astype(np.float32)


def _int8_linear(x, state: State, name: str):
    """``x @ W.T + b`` with W stored as int8 (out x in) and one scale per output channel: the graph keeps the
    weights in int8 and OpenVINO decompresses them inside its matrix kernels (its weight-compression pattern)."""
    ops = opset()
    weight = ops.convert(ops.constant(np.ascontiguousarray(state[f"{name}.weight"], dtype=np.int8)), np.float32)
    scaled = ops.multiply(weight, const(state[f"{name}.scale"].reshape(-1, 1)))
    return ops.add(ops.matmul(x, scaled, False, True), const(state[f"{name}.bias"]))


def _layer_norm(x, state: State, name: str, eps: float = 1e-5):
    ops = opset()
    axis = ops.constant(np.array([-1], dtype=np.int64))
    normed = ops.mvn(x, axis, True, eps, "inside_sqrt")
    return ops.add(ops.multiply(normed, const(state[f"{name}.weight"])), const(state[f"{name}.bias"]))


def clip_vit(state: State, input_size: int, rows: int, blocks: int, patch_means: bool = False):
    """CLIP ViT-B/16's image tower (OpenAI's weights, int8 linear layers) on ``rows x S x S x 3`` ``uint8``
    images -> ``rows x blocks x 768``: the CLS token after each of the first ``blocks`` transformer blocks (the
    residual stream, before any final norm). Later blocks are not built. Attention is the standard
    softmax(q k^T / 8) v over 12 heads; the MLP is CLIP's quick GELU (x * sigmoid(1.702 x)).

    The last block computes the CLS token alone after its attention: the only row that is read, the same numbers
    for a sixth of that block's cost. (Fewer patch tokens in the later blocks, by pooling or by keeping those the
    CLS token attends to, would halve the cost but lost 0.03-0.12 AUC on every family: the experiment log.)

    ``patch_means`` (for studies, ``experiments/clip_patch_means.py``): a second output, ``rows x (blocks - 1) x
    768``, the mean of the patch tokens after each block but the last."""
    if patch_means and blocks < 2:
        raise ValueError("patch_means needs at least 2 blocks (the last block keeps its CLS row only)")
    ops = opset()
    grid = input_size // CLIP_PATCH
    width = state["embed.class"].shape[0]
    head = width // CLIP_HEADS

    x = ops.parameter([rows, input_size, input_size, 3], np.uint8, name="x")
    unit = ops.divide(ops.convert(x, np.float32), const(np.array(255.0)))
    normalised = ops.divide(ops.subtract(unit, const(np.asarray(CLIP_MEAN))), const(np.asarray(CLIP_STD)))
    channels_first = ops.transpose(normalised, ops.constant(np.array([0, 3, 1, 2], dtype=np.int64)))
    patches = conv(channels_first, state["embed.patch"], None, stride=CLIP_PATCH)  # rows x 768 x g x g
    patches = ops.transpose(ops.reshape(patches, [rows, width, grid * grid], False), [0, 2, 1])
    cls = const(np.broadcast_to(state["embed.class"], (rows, 1, width)))
    y = ops.add(ops.concat([cls, patches], 1), const(clip_positions(state["embed.position"], grid)[None]))
    y = _layer_norm(y, state, "pre_norm")

    def split_heads(t):
        return ops.transpose(ops.reshape(t, [rows, -1, CLIP_HEADS, head], False), [0, 2, 1, 3])

    def first(t):
        return ops.slice(t, np.array([0]), np.array([1]), np.array([1]), np.array([1]))

    outputs, means = [], []
    for index in range(blocks):
        name = f"blocks.{index}"
        last = index == blocks - 1
        h = _layer_norm(y, state, f"{name}.norm1")
        queries = first(h) if last else h
        q = split_heads(ops.multiply(_int8_linear(queries, state, f"{name}.q"), const(np.array(head**-0.5))))
        k = split_heads(_int8_linear(h, state, f"{name}.k"))
        v = split_heads(_int8_linear(h, state, f"{name}.v"))
        attention = ops.softmax(ops.matmul(q, k, False, True), -1)
        mixed = ops.reshape(
            ops.transpose(ops.matmul(attention, v, False, False), [0, 2, 1, 3]), [rows, -1, width], False
        )
        y = ops.add(first(y) if last else y, _int8_linear(mixed, state, f"{name}.out"))
        h = _int8_linear(_layer_norm(y, state, f"{name}.norm2"), state, f"{name}.fc1")
        h = ops.multiply(h, ops.sigmoid(ops.multiply(h, const(np.array(1.702)))))
        y = ops.add(y, _int8_linear(h, state, f"{name}.fc2"))
        outputs.append(y if last else first(y))
        if patch_means and not last:
            patches_only = ops.slice(y, np.array([1]), np.array([grid * grid + 1]), np.array([1]), np.array([1]))
            means.append(ops.reduce_mean(patches_only, np.array([1]), True))
    features = ops.concat(outputs, 1) if len(outputs) > 1 else outputs[0]
    if means:
        return model([x], [features, ops.concat(means, 1) if len(means) > 1 else means[0]])
    return model([x], [features])
