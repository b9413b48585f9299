"""A model with a second CNN on the whole frame (card key ``frame_cnn``): loading, scoring, fusing, reporting.

The frame network here is v1's face CNN reused under ``view="frame"`` (same architecture, so its weights fit):
what is tested is the plumbing, not what a trained frame network knows.
"""

import json
import shutil

import numpy as np
import pytest

from gan_face import Detector
from gan_face._math import sigmoid
from gan_face.card import CnnConfig, ModelCard, Network, file_sha256
from gan_face.errors import WeightsError
from gan_face.fusion import Fusion
from gan_face.views import frame_view


@pytest.fixture(scope="module")
def frame_card(tmp_path_factory):
    """v1 plus a frame network at 96 px, fused over the face CNN, the frame CNN and the eyes."""
    folder = tmp_path_factory.mktemp("frame_model")
    base = ModelCard.load("gan-face-v1")
    face_weights = shutil.copy(base.face.weights_path, folder / "m.safetensors")
    frame_weights = shutil.copy(base.face.weights_path, folder / "m-frame.safetensors")
    frame = Network(CnnConfig(input_size=96, view="frame"), frame_weights, file_sha256(frame_weights))
    fusion = Fusion(("cnn", "frame", "eyes"), (1.0, 0.5, 0.25), (0.0, 0.0, -8.0), (2.0, 2.0, 6.0), 0.1)
    card = base.with_weights(face_weights).replace(name="m", frame=frame, fusion=fusion)
    return card.save(folder / "m.json")


def test_a_frame_network_round_trips_through_its_card(frame_card):
    raw = json.loads(frame_card.path.read_text())
    assert raw["frame_cnn"]["weights"] == "m-frame.safetensors"  # beside the card: named relatively
    assert raw["frame_cnn"]["config"]["view"] == "frame" and raw["cnn"]["config"]["view"] == "face"
    again = ModelCard.load(frame_card.path)
    assert again.frame == frame_card.frame and set(again.networks()) == {"cnn", "frame"}
    assert again.load_state_dict("frame").keys() == again.load_state_dict("cnn").keys()


def test_the_verdict_carries_the_frame_networks_evidence_and_its_share(frame_card, astronaut):
    detector = Detector(weights=frame_card.path)
    assert detector.evidence_names[:3] == ("cnn", "frame", "eyes")
    verdict = detector.score(astronaut)
    frame = verdict.evidence["frame"]
    # the frame network saw the whole image's centred square at its own input size
    expected = float(detector.views["frame"].logits([frame_view(astronaut, 96)])[0])
    assert frame.details["logit"] == pytest.approx(expected, abs=1e-4)
    assert frame.score == pytest.approx(sigmoid(expected), abs=1e-6)
    assert "whole picture" in frame.explanation
    assert verdict.contributions["frame"] == pytest.approx(0.5 * expected / 2.0, abs=1e-4)
    assert verdict.likelihood == pytest.approx(frame_card.fusion.likelihood(
        {name: result.score for name, result in verdict.evidence.items()}))  # fmt: skip


def test_the_frame_network_sees_the_background_and_the_face_network_does_not(frame_card, astronaut):
    detector = Detector(weights=frame_card.path)
    repainted = astronaut.copy()
    repainted[:, -80:] = (30, 200, 30)  # the right edge, far from the face (inside the centred square)
    before, after = detector.score(astronaut), detector.score(repainted)
    assert before.evidence["cnn"].score == pytest.approx(after.evidence["cnn"].score, abs=1e-6)
    assert abs(before.evidence["frame"].details["logit"] - after.evidence["frame"].details["logit"]) > 1e-3


def test_without_a_face_the_frame_network_does_not_judge(frame_card):
    verdict = Detector(weights=frame_card.path).score(np.full((200, 200, 3), 128, np.uint8))
    assert verdict.evidence["frame"].score is None and verdict.likelihood is None


def test_a_frame_network_that_does_not_see_the_frame_or_has_no_weights_is_refused(frame_card, tmp_path):
    raw = json.loads(frame_card.path.read_text())
    raw["cnn"]["weights"] = str(frame_card.face.weights_path)
    raw["frame_cnn"]["weights"] = str(frame_card.frame.weights_path)
    raw["frame_cnn"]["config"]["view"] = "face"
    (tmp_path / "wrong_view.json").write_text(json.dumps(raw))
    with pytest.raises(WeightsError, match="wrong_view.json.*must see the frame"):
        ModelCard.load(tmp_path / "wrong_view.json")
    raw["frame_cnn"]["config"]["view"] = "frame"
    raw["frame_cnn"]["weights"] = str(tmp_path / "gone.safetensors")
    (tmp_path / "no_weights.json").write_text(json.dumps(raw))
    with pytest.raises(WeightsError, match="gone.safetensors is missing"):
        ModelCard.load(tmp_path / "no_weights.json")


def test_a_frame_network_whose_weights_changed_is_refused(frame_card, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(frame_card.path.parent, folder)
    frame_file = folder / "m-frame.safetensors"
    data = bytearray(frame_file.read_bytes())
    data[-1] ^= 1
    frame_file.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="m-frame.safetensors: does not match the sha256"):
        Detector(weights=folder / "m.json")


def _script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_add_frame_cnn_joins_a_trained_frame_network_beside_the_card(frame_card, tmp_path):
    base = ModelCard.load("gan-face-v1")
    held = {"held_out_sources": ["real/a", "fake/b"]}
    model = base.with_weights(shutil.copy(base.face.weights_path, tmp_path / "model.safetensors"))
    model = model.with_sections(training=held).save(tmp_path / "model.json")
    trained = frame_card.frame
    frame = base.replace(face=trained)  # train.py --view frame's card: the frame CNN as its face network
    frame.with_sections(training={**held, "minutes": 1.0}).save(tmp_path / "frame.json")

    assert _script("add_frame_cnn").main(["--card", str(model.path), "--frame", str(tmp_path / "frame.json")]) == 0
    joined = ModelCard.load(model.path)
    assert (
        joined.frame.weights_path == tmp_path / "model-frame.safetensors" and joined.frame.config.view == "frame"
    )
    assert joined.sections["training"]["frame_cnn"]["minutes"] == 1.0 and joined.fusion == model.fusion
    assert Detector(weights=model.path).evidence_names[:2] == ("cnn", "frame")

    frame.with_sections(training={"held_out_sources": ["real/other"]}).save(tmp_path / "frame.json")
    with pytest.raises(SystemExit):  # trained on what the card holds out: its halves would not be unseen
        _script("add_frame_cnn").main(["--card", str(model.path), "--frame", str(tmp_path / "frame.json")])
