"""Each network of a scan under each inference runtime, on this CPU at one thread: eager PyTorch, ONNX Runtime
and OpenVINO, with the same weights, at several batch sizes.

    python experiments/bench_networks.py [--weights gan-face-v2] [--batches 1,8,32] [--seconds 2] [--json out.json]

The networks are the model's face CNN and frame CNN and MTCNN's P-Net (on one pyramid level of the detector's
canvas), R-Net and O-Net, as PyTorch modules (training's definition, facenet-pytorch's). ONNX files are exported
from them into a temporary folder; OpenVINO compiles the same ONNX files (scoring builds its graphs from the
weights instead, :mod:`gan_face.graphs`: the same layers, so the same speed). Prints images (or crops) per
second and each runtime's largest difference from eager PyTorch's outputs. Runtimes not installed are skipped.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def networks(weights: str | None):
    """(name, torch module, input shape without the batch) for every network of a scan: the card's CNNs as
    training defines them, and facenet-pytorch's P-Net, R-Net and O-Net with the weights the package ships."""
    import torch
    from facenet_pytorch.models import mtcnn as reference

    from gan_face import _mtcnn
    from gan_face.card import ModelCard
    from gan_face.training.network import load_torch_cnn

    card = ModelCard.load(weights)
    found = []
    for name, network in card.networks().items():
        module = load_torch_cnn(card, name)
        size = network.config.input_size
        found.append((f"{name} CNN ({size} px)", module, (3, size, size)))
    shipped = _mtcnn.load_weights()
    modules = {}
    for net, cls in (("pnet", reference.PNet), ("rnet", reference.RNet), ("onet", reference.ONet)):
        modules[net] = cls(pretrained=False).eval()
        modules[net].load_state_dict({k: torch.from_numpy(v) for k, v in shipped[net].items()})
    side = card.face_search.detect_size
    level = int(side * 12.0 / card.face_search.min_face_size * 0.709**2 + 1)  # a middle pyramid level
    found += [
        (f"P-Net ({level} px level)", modules["pnet"], (3, level, level)),
        ("R-Net (24 px crops)", modules["rnet"], (3, 24, 24)),
        ("O-Net (48 px crops)", modules["onet"], (3, 48, 48)),
    ]
    return found


def timed(run, seconds: float) -> float:
    """Calls per second of ``run`` over about ``seconds`` (after one warm-up call)."""
    run()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or calls < 3:
        run()
        calls += 1
    return calls / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    from gan_face._runtime import tune_allocator

    tune_allocator()
    torch.set_num_threads(1)
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    workdir = Path(tempfile.mkdtemp(prefix="gan-face-nets-"))
    for name, module, shape in networks(args.weights):
        module = module.eval()
        path = workdir / f"{len(rows)}.onnx"
        example = torch.rand(1, *shape) * 2 - 1
        with torch.inference_mode():
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=["x"],
                dynamic_axes={"x": {0: "n"}},
                opset_version=17,
                dynamo=False,
            )
        sessions = {}
        try:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            sessions["onnxruntime"] = lambda x, s=session: s.run(None, {"x": x})
        except ImportError:
            pass
        try:
            from gan_face.graphs.runtime import openvino

            ov = openvino()
            core = ov.Core()
            # f32: on CPUs with bf16 units OpenVINO otherwise runs in bf16, which moves a logit by up to 0.1
            for runtime, precision in (("openvino", "f32"), ("openvino_bf16", "bf16")):
                compiled = core.compile_model(
                    str(path),
                    "CPU",
                    {
                        "INFERENCE_NUM_THREADS": 1,
                        "PERFORMANCE_HINT": "LATENCY",
                        "INFERENCE_PRECISION_HINT": precision,
                    },
                )
                sessions[runtime] = lambda x, c=compiled: list(c(x).values())
        except ImportError:
            pass
        for batch in batches:
            x = (np.random.default_rng(batch).random((batch, *shape), dtype=np.float32) * 2 - 1).astype(np.float32)
            tensor = torch.from_numpy(x)
            with torch.inference_mode():
                reference = module(tensor)
                reference = [r.numpy() for r in (reference if isinstance(reference, tuple) else (reference,))]
                eager = timed(lambda: module(tensor), args.seconds) * batch
            row = {"network": name, "batch": batch, "eager": eager}
            for runtime, run in sessions.items():
                outputs = run(x)
                row[runtime] = timed(lambda: run(x), args.seconds) * batch
                row[f"{runtime}_max_diff"] = float(
                    max(np.abs(np.asarray(o).reshape(r.shape) - r).max() for o, r in zip(outputs, reference))
                )
            rows.append(row)
            others = "  ".join(
                f"{rt} {row[rt]:8.1f}/s ({row[rt] / eager:4.2f}x, max diff {row[rt + '_max_diff']:.1e})"
                for rt in sessions
            )
            print(f"{name:24s} batch {batch:3d}: eager {eager:8.1f}/s  {others}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
