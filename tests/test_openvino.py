"""The scoring runtime (OpenVINO graphs built from the weights, numpy around them) against the PyTorch definitions
training uses and against facenet-pytorch's MTCNN: same outputs, so the same likelihoods as torch scoring gave.
Without torch (the light [test] install) the comparisons skip and the runtime's own tests still run."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import HAS_REFERENCES, HAS_TRAINING, needs_references, needs_training

from gan_face import _mtcnn
from gan_face.card import CnnConfig, ModelCard
from gan_face.cnn import CNN_CHUNK, STAGES, load_cnn
from gan_face.graphs.efficientnet import efficientnet_lite
from gan_face.graphs.mtcnn import onet
from gan_face.graphs.runtime import CompiledNetwork

if HAS_TRAINING:
    import torch

    from gan_face.training.network import build_cnn, load_torch_cnn, preprocess
if HAS_REFERENCES:
    from facenet_pytorch.models import mtcnn as facenet


def crops(size: int, n: int = 11, seed: int = 0) -> list[np.ndarray]:
    """The astronaut's face at a few offsets and flips, and noise: more than one padded call of rows."""
    from skimage import data

    astronaut, rng = data.astronaut(), np.random.default_rng(seed)
    found = []
    for i in range(n):
        if i % 4 == 3:
            found.append(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            continue
        top, left = int(rng.integers(30, 90)), int(rng.integers(120, 180))
        face = np.asarray(
            torch.nn.functional.interpolate(
                torch.from_numpy(astronaut[top : top + 170, left : left + 170]).permute(2, 0, 1)[None].float(),
                size=(size, size),
                mode="bilinear",
            )[0]
            .permute(1, 2, 0)
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
        )
        found.append(np.ascontiguousarray(face[:, ::-1] if i % 2 else face))
    return found


def torch_logits(model: torch.nn.Module, images: list[np.ndarray], config: CnnConfig) -> np.ndarray:
    with torch.inference_mode():
        return model(preprocess(images, config)).numpy()


SHIPPED = [
    (name, network) for name in ("gan-face-v1", "gan-face-v2") for network in ModelCard.load(name).networks()
]


@needs_training
@pytest.mark.parametrize("name, network", SHIPPED)
def test_every_shipped_cnn_scores_as_its_torch_definition(name, network):
    card = ModelCard.load(name)
    scorer, reference = load_cnn(card, network=network), load_torch_cnn(card, network)
    images = crops(scorer.config.input_size)
    expected = torch_logits(reference, images, scorer.config)
    got = scorer.logits(images)
    assert got.shape == expected.shape == (len(images),)
    assert np.abs(got - expected).max() < 1e-4, np.abs(got - expected).max()
    # any number of rows gives each image the same bits (calls are padded to a fixed size)
    assert np.array_equal(scorer.logits(images[:1]), got[:1])
    assert np.array_equal(scorer.logits(images[: CNN_CHUNK + 1])[-1], got[CNN_CHUNK])
    assert scorer.logits([]).shape == (0,)


@needs_training
@pytest.mark.parametrize("architecture, size", [("efficientnet_lite0", 97), ("efficientnet_lite1", 64)])
def test_random_weights_of_each_architecture_match_torch(architecture, size):
    """Weights no training produced (BatchNorm statistics far from 0 and 1, odd input sizes for the "same"
    padding), so the graph builder is checked beyond the shipped models."""
    torch.manual_seed(0)
    config = CnnConfig(architecture=architecture, input_size=size)
    model = build_cnn(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    graph = efficientnet_lite(state, STAGES[architecture], size, CNN_CHUNK, config.mean, config.std)
    compiled = CompiledNetwork(graph, CNN_CHUNK)
    images = crops(size, n=5, seed=1)
    (got,) = compiled(np.stack(images))
    expected = torch_logits(model, images, config)
    assert np.abs(got.reshape(-1) - expected).max() < 1e-4


def test_overlapping_calls_get_a_compiled_copy_each_up_to_streams_with_the_same_outputs():
    """Calls that never overlap share one copy (no memory for nothing, as a thread pool per call would cost);
    overlapping calls make copies, at most ``streams``, each compiled for one stream; every copy gives the same
    outputs."""
    import threading

    weights = _mtcnn.load_weights()["onet"]
    network = CompiledNetwork(onet(weights, 4), 4, streams=2)
    x = np.random.default_rng(0).uniform(-1, 1, (6, 3, 48, 48)).astype(np.float32)
    expected = network(x)
    for _ in range(3):  # one thread after another, as successive thread pools call
        thread = threading.Thread(target=network, args=(x,))
        thread.start()
        thread.join()
    assert network.slots == 1

    outputs, start = [], threading.Barrier(3)

    def busy():
        start.wait()
        outputs.extend(network(x) for _ in range(20))

    threads = [threading.Thread(target=busy) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert network.slots == 2  # three callers at once, two streams: a second copy, and no third
    assert len(outputs) == 60
    for got in outputs:
        for part, reference in zip(got, expected):
            np.testing.assert_array_equal(part, reference)
    assert network(x[:0])[0].shape == (0, *expected[0].shape[1:])


def test_a_hint_cannot_undo_one_inference_per_calling_thread():
    weights = _mtcnn.load_weights()["onet"]
    network = CompiledNetwork(onet(weights, 4), 4, cpu_hints={"NUM_STREAMS": 4, "PERFORMANCE_HINT": "LATENCY"})
    assert network.compiled.get_property("NUM_STREAMS") == 1


def facenet_nets() -> dict[str, torch.nn.Module]:
    """facenet-pytorch's own networks with its own weights (loaded by its code from its wheel)."""
    return {
        "pnet": facenet.PNet(pretrained=True).eval(),
        "rnet": facenet.RNet(pretrained=True).eval(),
        "onet": facenet.ONet(pretrained=True).eval(),
    }


@needs_references
def test_shipped_mtcnn_weights_are_facenet_pytorchs():
    shipped = _mtcnn.load_weights()
    for name, module in facenet_nets().items():
        theirs = {k: v.numpy() for k, v in module.state_dict().items()}
        assert set(shipped[name]) == set(theirs)
        for key, value in theirs.items():
            assert np.array_equal(shipped[name][key], value), f"{name}.{key}"


@needs_references
def test_mtcnn_networks_match_facenet_pytorchs():
    nets, reference = _mtcnn.load_nets(), facenet_nets()
    rng = np.random.default_rng(2)
    cases = {
        "pnet": rng.uniform(-1, 1, (_mtcnn.IMAGE_CHUNK + 1, 3, 45, 61)),
        "rnet": rng.uniform(-1, 1, (_mtcnn.RNET_CHUNK + 3, 3, 24, 24)),
        "onet": rng.uniform(-1, 1, (5, 3, 48, 48)),
    }
    for name, x in cases.items():
        x = x.astype(np.float32)
        got = getattr(nets, name)(x)
        with torch.inference_mode():
            expected = reference[name](torch.from_numpy(x))
        assert len(got) == len(expected)
        for mine, theirs in zip(got, expected):
            assert mine.shape == tuple(theirs.shape)
            assert np.abs(mine - theirs.numpy()).max() < 1e-5, name


@needs_training
def test_area_resample_is_torchs_area_interpolation():
    """The summed-area crops are ``interpolate(mode="area")`` of each rectangle, as facenet-pytorch resizes."""
    rng = np.random.default_rng(3)
    canvases = rng.integers(0, 256, (3, 70, 90, 3), dtype=np.uint8)
    table = _mtcnn._summed_area_table(canvases)
    x0, y0 = rng.integers(0, 60, 40), rng.integers(0, 40, 40)
    rect = np.stack([x0, y0, x0 + rng.integers(1, 31, 40), y0 + rng.integers(1, 31, 40)], axis=1)
    inds = rng.integers(0, 3, 40)
    for size in ((24, 24), (48, 48), (13, 17)):
        got = _mtcnn._area_resample(table, rect, inds, 90, 70, size)
        for k, (a, b, c, d) in enumerate(rect):
            patch = torch.from_numpy(canvases[inds[k], b:d, a:c]).permute(2, 0, 1)[None].float()
            expected = torch.nn.functional.interpolate(patch, size=size, mode="area")[0].numpy()
            assert np.abs(got[k] - expected).max() < 1e-3


@needs_references
def test_detection_matches_facenet_pytorchs_mtcnn_image_by_image():
    """The whole numpy pipeline against facenet-pytorch's ``detect_face`` on one canvas at a time (its batched
    form lets images of a batch suppress each other's boxes, which ours never does)."""
    from facenet_pytorch.models.utils.detect_face import detect_face
    from test_batching import constructed_images

    from gan_face.align import FaceAligner

    aligner, reference = FaceAligner(), facenet_nets()
    found = 0
    for image in constructed_images(12):
        canvas, _ = aligner._letterbox(image)
        (ours,) = _mtcnn.detect_faces(
            canvas[None], aligner.nets, min_face_size=aligner.min_face_size, thresholds=aligner.thresholds
        )
        with torch.inference_mode():
            boxes, points = detect_face(
                canvas[None], aligner.min_face_size, reference["pnet"], reference["rnet"], reference["onet"],
                list(aligner.thresholds), aligner.factor, "cpu",
            )  # fmt: skip
        boxes, points = (
            np.asarray(boxes[0], dtype=np.float64).reshape(-1, 5),
            np.asarray(points[0]).reshape(-1, 5, 2),
        )
        order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")
        assert len(ours.boxes) == len(boxes)
        assert np.abs(ours.boxes - boxes[order, :4]).max(initial=0) < 1e-2
        assert np.abs(ours.probs - boxes[order, 4]).max(initial=0) < 1e-5
        assert np.abs(ours.points - points[order]).max(initial=0) < 1e-2
        found += len(boxes)
    assert found >= 5  # most of the astronaut crops: the comparison is not of empty lists


def test_a_scan_needs_no_torch():
    """Scoring (detection, both CNNs, checks) runs without importing torch: its import was ~2 s of start-up."""
    code = (
        "import sys\nfrom skimage import data\nfrom gan_face import Detector\n"
        "verdict = Detector().score(data.astronaut())\n"
        "assert verdict.likelihood is not None and verdict.face is not None\n"
        "assert not {'torch', 'torchvision', 'facenet_pytorch'} & set(sys.modules), sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("host_first", ["", "import openvino_telemetry\n"])
def test_scoring_sends_no_telemetry_and_writes_nothing_home(tmp_path, host_first):
    """OpenVINO's import reports itself to Google Analytics and writes a client id under ``~/intel`` unless
    the user opted out (or ``CI`` is set): a scan must do neither, also when the host imported the telemetry
    package first, and the host's telemetry module is the same one after as before."""
    code = (
        "import sys\nfrom skimage import data\n" + host_first + "before = sys.modules.get('openvino_telemetry')\n"
        "from gan_face import Detector\n"
        "assert Detector().score(data.astronaut()).likelihood is not None\n"
        "telemetry = sys.modules['openvino.tools.ovc.telemetry_utils'].tm\n"
        "assert telemetry.__name__ == 'openvino.tools.ovc.telemetry_stub', telemetry\n"
        "assert sys.modules.get('openvino_telemetry') is before\n"
        "import openvino_telemetry\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env={**env, "HOME": str(tmp_path)})
    assert not list(tmp_path.iterdir())  # no ~/intel/openvino_ga_cid, no usage count


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_a_cuda_device_is_refused_with_the_reason(device):
    from gan_face.graphs.runtime import runtime_device

    with pytest.raises(ValueError, match="OpenVINO.*no CUDA"):
        runtime_device(device)
    assert runtime_device(None) == runtime_device("cpu") == "CPU"
