"""Convert MTCNN's weights from the facenet-pytorch wheel (three torch files) into the one safetensors file the
package ships (``models/mtcnn.safetensors``), so that scoring reads them without torch.

    python scripts/convert_mtcnn_weights.py [-o models/mtcnn.safetensors]

The tensors are copied as they are (float32), keyed ``<net>.<layer>.<tensor>``; ``tests/test_openvino.py``
checks the shipped file against the wheel's whenever facenet-pytorch is installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path


def wheel_weights() -> dict:
    """facenet-pytorch's P-Net, R-Net and O-Net tensors (read with ``weights_only=True``: no code runs)."""
    import torch

    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("facenet-pytorch is not installed: pip install 'facenet-pytorch>=2.5.3,<2.6'")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "data")
    tensors = {}
    for net in ("pnet", "rnet", "onet"):
        state = torch.load(os.path.join(folder, f"{net}.pt"), map_location="cpu", weights_only=True)
        tensors.update({f"{net}.{name}": tensor.contiguous() for name, tensor in state.items()})
    return tensors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1] / "models" / "mtcnn.safetensors"
    parser.add_argument("-o", "--output", type=Path, default=default)
    args = parser.parse_args()
    from safetensors.torch import save_file

    tensors = wheel_weights()
    save_file(tensors, str(args.output), metadata={"source": "facenet-pytorch 2.5.3 (MIT licence), data/*.pt"})
    print(f"{args.output}: {len(tensors)} tensors, {sum(t.numel() for t in tensors.values())} values")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
