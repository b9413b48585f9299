"""The networks as scoring runs them: OpenVINO graphs built from the weights, run on the CPU at one thread each.

Training defines the networks in PyTorch (:mod:`gan_face.training.network`, facenet-pytorch's MTCNN) and saves
their weights; scoring builds the same layers here, from the same tensors, with OpenVINO's operator set, so a scan
needs neither torch (whose import was about 2 seconds of every scan's start-up) nor an exported file beside the
weights, and any card (shipped, fine-tuned, older) loads the same way. ``tests/test_openvino.py`` checks every
graph against its PyTorch definition.

Measured on these 2-core VMs at one thread (``experiments/bench_networks.py``): OpenVINO in float32 runs the face
CNN 1.6x, the frame CNN 1.6x and MTCNN's networks 1.5-1.7x faster than eager PyTorch at the batch sizes used
here, with outputs within 3e-6 of torch's. Its default on CPUs with bfloat16 units is bfloat16, 2.4-3.4x faster
but off by up to 0.1 in a logit, so float32 is asked for explicitly. ONNX Runtime was slower than eager PyTorch
for batches of 8 and more.

Every network is compiled for a fixed number of rows (calls are padded to it), like the torch code before it:
the math kernels depend on the batch size, and a fixed one gives an image the same outputs in any batch.
"""

from __future__ import annotations

import math
import queue
import sys
import threading
from types import ModuleType
from typing import Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

#: Compile options on the CPU: float32 whatever the CPU offers, threads not pinned to cores (another process may
#: hold one), one stream of one thread: an inference runs on the thread that asks for it.
CPU_CONFIG = {
    "INFERENCE_PRECISION_HINT": "f32",
    "ENABLE_CPU_PINNING": False,
    "NUM_STREAMS": 1,
    "INFERENCE_NUM_THREADS": 1,
}

State = Mapping[str, np.ndarray]


_ABSENT = object()


def openvino() -> ModuleType:
    """OpenVINO, imported without its usage telemetry: the one way this package imports it.

    ``import openvino`` imports its model converter, which reports every import to Google Analytics (a process
    forked to send it, a client id and a usage count written under ``~/intel``) unless the user opted out. A
    forensic tool run offline on sensitive folders must not do that. OpenVINO falls back to its own no-op stub
    when ``openvino_telemetry`` cannot be imported, so that module is hidden for the length of this import and put
    back after it: a user's own ``import openvino_telemetry`` still works (the converter keeps the stub, so the
    host's ``openvino.convert_model`` reports nothing either). If the host application imported OpenVINO first,
    its settings stand.
    """
    if "openvino" in sys.modules:
        import openvino as ov

        return ov
    hidden = sys.modules.get("openvino_telemetry", _ABSENT)
    sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # makes its import fail
    try:
        import openvino as ov
    finally:
        if hidden is _ABSENT:
            sys.modules.pop("openvino_telemetry", None)
        else:
            sys.modules["openvino_telemetry"] = hidden
    return ov


def _ops():
    openvino()
    import openvino.opset15 as ops

    return ops


class CompiledNetwork:
    """A graph compiled for ``rows`` inputs of one shape; callable on any number of rows (in calls of exactly
    ``rows``, the last padded with zeros) from any thread.

    ``streams``: how many calls may run at once (a scan runs one worker per core: with one their inferences would
    wait for each other). Each call takes a free slot (an inference request) for its length and gives it back;
    when none is free and fewer than ``streams`` exist, the caller makes one, else it waits for one. On the CPU a
    slot is a copy of the network compiled for one stream, so an inference runs on the calling thread: one copy
    compiled for ``streams`` streams hands every inference to a stream thread of its own and back, and a v3 scan
    on 2 cores kept them 91% busy that way against 97% with a copy per worker (6-9% more images per second, about
    80 MiB of memory for each worker after the first). Other devices (an Intel GPU) schedule their own streams:
    their slots are requests on one compiled network. Calls that never overlap never make a second slot.
    """

    def __init__(
        self, model, rows: int, device: str = "CPU", streams: int = 1, cpu_hints: Optional[Mapping] = None
    ) -> None:
        self.rows = rows
        self._model, self._device = model, device.upper()
        # the stream settings last: a hint cannot undo one inference per calling thread
        streams_config = {k: CPU_CONFIG[k] for k in ("NUM_STREAMS", "INFERENCE_NUM_THREADS")}
        self._config = {**CPU_CONFIG, **(cpu_hints or {}), **streams_config} if self._device == "CPU" else {}
        self.compiled = self._compile()
        #: what the graph takes (float32, or uint8 for the CNNs, which normalise their crops themselves)
        self.input_dtype = self.compiled.inputs[0].get_element_type().to_dtype()
        self.streams = max(1, int(streams))
        self._free: queue.LifoQueue = queue.LifoQueue()  # the most recently used slot first: its caches are warm
        self._free.put(self.compiled.create_infer_request())
        self.slots = 1  # slots made so far (at most ``streams``)
        self._lock = threading.Lock()

    def _compile(self):
        return openvino().Core().compile_model(self._model, self._device, self._config)

    def _take(self):
        """A free slot, a new one if none is free and fewer than ``streams`` exist, else the next one freed."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            grow = self.slots < self.streams
            if grow:
                self.slots += 1
        if not grow:
            return self._free.get()
        try:  # compiled outside the lock: the other callers go on meanwhile
            compiled = self._compile() if self._device == "CPU" else self.compiled
            return compiled.create_infer_request()
        except BaseException:
            with self._lock:
                self.slots -= 1
            raise

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        n = len(x)
        if not n:
            return tuple(
                np.zeros((0, *out.get_partial_shape().to_shape()[1:]), np.float32) for out in self.compiled.outputs
            )
        outputs: list[list[np.ndarray]] = []
        request = self._take()
        try:
            for start in range(0, n, self.rows):
                part = x[start : start + self.rows]
                if len(part) < self.rows:
                    part = np.concatenate([part, np.zeros((self.rows - len(part), *part.shape[1:]), part.dtype)])
                results = request.infer({0: np.ascontiguousarray(part, dtype=self.input_dtype)})
                # by position: a slot's outputs are its own copy's, not self.compiled's
                outputs.append([np.array(results[i]) for i in range(len(self.compiled.outputs))])
        finally:
            self._free.put(request)
        return tuple(np.concatenate(parts)[:n] for parts in zip(*outputs))


def _model(inputs, outputs):
    return openvino().Model([o if hasattr(o, "get_element_type") else o.output(0) for o in outputs], inputs)


def _const(array: np.ndarray):
    return _ops().constant(np.ascontiguousarray(array, dtype=np.float32))


def _conv(x, weight: np.ndarray, bias: np.ndarray | None, stride: int = 1, pads=((0, 0), (0, 0)), groups: int = 1):
    ops = _ops()
    begin, end = [p[0] for p in pads], [p[1] for p in pads]
    if groups == 1:
        y = ops.convolution(x, _const(weight), [stride, stride], begin, end, [1, 1])
    else:
        kernel = weight.reshape(groups, weight.shape[0] // groups, *weight.shape[1:])
        y = ops.group_convolution(x, _const(kernel), [stride, stride], begin, end, [1, 1])
    if bias is not None:
        y = ops.add(y, _const(bias.reshape(1, -1, 1, 1)))
    return y


def _linear(x, weight: np.ndarray, bias: np.ndarray):
    ops = _ops()
    return ops.add(ops.matmul(x, _const(weight), False, True), _const(bias.reshape(1, -1)))


# ---------------------------------------------------------------------------------------- EfficientNet-Lite


def fold_batchnorm(weight: np.ndarray, bn: Mapping[str, np.ndarray], eps: float = 1e-3):
    """A convolution's weight and bias with the BatchNorm after it folded in (as torch's ``fuse_conv_bn_eval``)."""
    scale = bn["weight"] / np.sqrt(bn["running_var"] + np.float32(eps))
    folded = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    return folded.astype(np.float32), (bn["bias"] - bn["running_mean"] * scale).astype(np.float32)


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
    ops = _ops()

    def bn(prefix: str) -> dict[str, np.ndarray]:
        return {k: state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}

    def conv_bn(x, size: int, conv: str, norm: str, stride: int = 1, groups: int = 1, relu: bool = True):
        weight, bias = fold_batchnorm(state[f"{conv}.weight"], bn(norm))
        pads = _same_pads(size, weight.shape[-1], stride)
        y = _conv(x, weight, bias, stride, (pads, pads), groups)
        return (ops.clamp(y, 0.0, 6.0) if relu else y), math.ceil(size / stride)

    x = ops.parameter([rows, input_size, input_size, 3], np.uint8, name="x")
    unit = ops.divide(ops.convert(x, np.float32), _const(np.array(255.0)))
    normalised = ops.divide(ops.subtract(unit, _const(np.asarray(mean))), _const(np.asarray(std)))
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
    pooled = ops.reduce_mean(y, _ops().constant(np.array([2, 3], dtype=np.int64)), False)
    logits = ops.reshape(_linear(pooled, state["_fc.weight"], state["_fc.bias"]), [rows], False)
    return _model([x], [logits])


# ------------------------------------------------------------------------------------------------ MTCNN


def _prelu(x, state: State, name: str):
    return _ops().prelu(x, _const(state[f"{name}.weight"]))


def _pool(x, kernel: int, stride: int):
    return _ops().max_pool(x, [stride, stride], [1, 1], [0, 0], [0, 0], [kernel, kernel], "ceil_torch").output(0)


def _conv_prelu(x, state: State, conv: str, prelu: str):
    return _prelu(_conv(x, state[f"{conv}.weight"], state[f"{conv}.bias"]), state, prelu)


def _flatten_hwc(x, features: int):
    """torch's ``x.permute(0, 3, 2, 1).contiguous().view(n, -1)``: the dense layers' input order."""
    ops = _ops()
    return ops.reshape(
        ops.transpose(x, _ops().constant(np.array([0, 3, 2, 1], dtype=np.int64))), [-1, features], False
    )


def pnet(state: State, height: int, width: int, rows: int):
    """P-Net on ``rows x 3 x height x width`` normalised canvases: (box regression, face probabilities) maps."""
    ops = _ops()
    x = ops.parameter([rows, 3, height, width], np.float32, name="x")
    y = _pool(_conv_prelu(x, state, "conv1", "prelu1"), 2, 2)
    y = _conv_prelu(_conv_prelu(y, state, "conv2", "prelu2"), state, "conv3", "prelu3")
    probs = ops.softmax(_conv(y, state["conv4_1.weight"], state["conv4_1.bias"]), 1)
    reg = _conv(y, state["conv4_2.weight"], state["conv4_2.bias"])
    return _model([x], [reg, probs])


def rnet(state: State, rows: int):
    """R-Net on ``rows`` 24-pixel crops: (box regression, face probabilities)."""
    ops = _ops()
    x = ops.parameter([rows, 3, 24, 24], np.float32, name="x")
    y = _pool(_conv_prelu(x, state, "conv1", "prelu1"), 3, 2)
    y = _pool(_conv_prelu(y, state, "conv2", "prelu2"), 3, 2)
    y = _flatten_hwc(_conv_prelu(y, state, "conv3", "prelu3"), 576)
    y = _prelu(_linear(y, state["dense4.weight"], state["dense4.bias"]), state, "prelu4")
    probs = ops.softmax(_linear(y, state["dense5_1.weight"], state["dense5_1.bias"]), 1)
    return _model([x], [_linear(y, state["dense5_2.weight"], state["dense5_2.bias"]), probs])


def onet(state: State, rows: int):
    """O-Net on ``rows`` 48-pixel crops: (box regression, landmarks, face probabilities)."""
    ops = _ops()
    x = ops.parameter([rows, 3, 48, 48], np.float32, name="x")
    y = _pool(_conv_prelu(x, state, "conv1", "prelu1"), 3, 2)
    y = _pool(_conv_prelu(y, state, "conv2", "prelu2"), 3, 2)
    y = _pool(_conv_prelu(y, state, "conv3", "prelu3"), 2, 2)
    y = _flatten_hwc(_conv_prelu(y, state, "conv4", "prelu4"), 1152)
    y = _prelu(_linear(y, state["dense5.weight"], state["dense5.bias"]), state, "prelu5")
    probs = ops.softmax(_linear(y, state["dense6_1.weight"], state["dense6_1.bias"]), 1)
    reg = _linear(y, state["dense6_2.weight"], state["dense6_2.bias"])
    marks = _linear(y, state["dense6_3.weight"], state["dense6_3.bias"])
    return _model([x], [reg, marks, probs])


class ShapeCache:
    """Networks compiled on first use, one per input shape (P-Net sees one shape per pyramid level)."""

    def __init__(self, build: Callable[..., object], rows: int, device: str = "CPU", streams: int = 1) -> None:
        self.build, self.rows, self.device, self.streams = build, rows, device, streams
        self._compiled: dict[tuple, CompiledNetwork] = {}
        self._lock = threading.Lock()

    def prepare(self, shapes: Iterable[tuple[int, ...]]) -> None:
        """Compile the networks of these input shapes (``H, W``) now rather than on first use."""
        for shape in shapes:
            self._network(tuple(shape))

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        return self._network(tuple(x.shape[2:]))(x)

    def _network(self, shape: tuple) -> CompiledNetwork:
        network = self._compiled.get(shape)
        if network is None:
            with self._lock:
                network = self._compiled.get(shape)
                if network is None:
                    network = CompiledNetwork(self.build(*shape, self.rows), self.rows, self.device, self.streams)
                    self._compiled[shape] = network
        return network


# ------------------------------------------------------------------------------------------------ CLIP ViT

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
    ops = _ops()
    weight = ops.convert(ops.constant(np.ascontiguousarray(state[f"{name}.weight"], dtype=np.int8)), np.float32)
    scaled = ops.multiply(weight, _const(state[f"{name}.scale"].reshape(-1, 1)))
    return ops.add(ops.matmul(x, scaled, False, True), _const(state[f"{name}.bias"]))


def _layer_norm(x, state: State, name: str, eps: float = 1e-5):
    ops = _ops()
    axis = ops.constant(np.array([-1], dtype=np.int64))
    normed = ops.mvn(x, axis, True, eps, "inside_sqrt")
    return ops.add(ops.multiply(normed, _const(state[f"{name}.weight"])), _const(state[f"{name}.bias"]))


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
    ops = _ops()
    grid = input_size // CLIP_PATCH
    width = state["embed.class"].shape[0]
    head = width // CLIP_HEADS

    x = ops.parameter([rows, input_size, input_size, 3], np.uint8, name="x")
    unit = ops.divide(ops.convert(x, np.float32), _const(np.array(255.0)))
    normalised = ops.divide(ops.subtract(unit, _const(np.asarray(CLIP_MEAN))), _const(np.asarray(CLIP_STD)))
    channels_first = ops.transpose(normalised, ops.constant(np.array([0, 3, 1, 2], dtype=np.int64)))
    patches = _conv(channels_first, state["embed.patch"], None, stride=CLIP_PATCH)  # rows x 768 x g x g
    patches = ops.transpose(ops.reshape(patches, [rows, width, grid * grid], False), [0, 2, 1])
    cls = _const(np.broadcast_to(state["embed.class"], (rows, 1, width)))
    y = ops.add(ops.concat([cls, patches], 1), _const(clip_positions(state["embed.position"], grid)[None]))
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
        q = split_heads(ops.multiply(_int8_linear(queries, state, f"{name}.q"), _const(np.array(head**-0.5))))
        k = split_heads(_int8_linear(h, state, f"{name}.k"))
        v = split_heads(_int8_linear(h, state, f"{name}.v"))
        attention = ops.softmax(ops.matmul(q, k, False, True), -1)
        mixed = ops.reshape(
            ops.transpose(ops.matmul(attention, v, False, False), [0, 2, 1, 3]), [rows, -1, width], False
        )
        y = ops.add(first(y) if last else y, _int8_linear(mixed, state, f"{name}.out"))
        h = _int8_linear(_layer_norm(y, state, f"{name}.norm2"), state, f"{name}.fc1")
        h = ops.multiply(h, ops.sigmoid(ops.multiply(h, _const(np.array(1.702)))))
        y = ops.add(y, _int8_linear(h, state, f"{name}.fc2"))
        outputs.append(y if last else first(y))
        if patch_means and not last:
            patches_only = ops.slice(y, np.array([1]), np.array([grid * grid + 1]), np.array([1]), np.array([1]))
            means.append(ops.reduce_mean(patches_only, np.array([1]), True))
    features = ops.concat(outputs, 1) if len(outputs) > 1 else outputs[0]
    if means:
        return _model([x], [features, ops.concat(means, 1) if len(means) > 1 else means[0]])
    return _model([x], [features])
