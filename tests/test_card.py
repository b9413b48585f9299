"""ModelCard: the one reader and writer of model cards."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from conftest import needs_training

from gan_face.card import ModelCard, default_card_path, shipped_card_path
from gan_face.errors import WeightsError

REPOSITORY = Path(__file__).resolve().parents[1]


def test_shipped_card_round_trips_byte_for_byte(tmp_path):
    shipped = ModelCard.load()
    for network in shipped.networks().values():  # every weights file beside the copy, as beside the original
        shutil.copy(network.weights_path, tmp_path / network.weights_path.name)
    face = shipped.face
    moved = shipped.replace(face=dataclasses.replace(face, weights_path=tmp_path / face.weights_path.name))
    if shipped.frame is not None:
        moved = moved.replace(
            frame=dataclasses.replace(shipped.frame, weights_path=tmp_path / shipped.frame.weights_path.name)
        )
    saved = moved.save(tmp_path / "copy.json")
    assert (tmp_path / "copy.json").read_text() == default_card_path().read_text()
    again = ModelCard.load(tmp_path / "copy.json")
    assert again.fusion == shipped.fusion and again.face == moved.face and again.face_search == shipped.face_search
    assert again.sections == shipped.sections and saved.path == tmp_path / "copy.json"


@pytest.mark.parametrize("name", ["gan-face-v1", "gan-face-v2", "gan-face-v3", "gan-face-v4"])
def test_every_shipped_card_saves_the_keys_and_values_it_was_read_from(tmp_path, name):
    # the face CNN is a Network in the card object; on disk it stays the flat "cnn" entry it always was
    original = json.loads(shipped_card_path(name).read_text())
    card = ModelCard.load(name)
    assert card.networks()["cnn"] is card.face and card.face.config.view == "face"
    written = json.loads(card.save(tmp_path / f"{name}.json").path.read_text())
    for key in ("cnn", "frame_cnn"):  # saved elsewhere, a CNN's weights are named by absolute path: the same file
        if key in original:
            beside = shipped_card_path(name).parent / original[key]["weights"]
            assert Path(written[key]["weights"]) == beside.resolve()
            written[key]["weights"] = original[key]["weights"]
    assert written == original and list(written) == list(original)


def test_the_face_cnns_old_flat_fields_still_read():
    card = ModelCard.load("gan-face-v1")
    face = card.face
    assert (card.cnn, card.weights_path, card.weights_sha256) == (face.config, face.weights_path, face.sha256)
    faceless = card.replace(face=None)
    assert faceless.cnn is None and faceless.weights_path is None and "cnn" not in faceless.networks()
    with pytest.raises(ValueError, match="no weights"):
        faceless.with_weights(card.face.weights_path)


def test_card_elsewhere_names_its_weights_by_absolute_path(tmp_path):
    shipped = ModelCard.load()
    shipped.save(tmp_path / "work.json")
    written = json.loads((tmp_path / "work.json").read_text())
    assert written["cnn"]["weights"] == str(shipped.face.weights_path.resolve())
    assert ModelCard.load(tmp_path / "work.json").load_state_dict()  # and it still loads


def test_sections_are_added_replaced_and_dropped():
    card = ModelCard.load().with_sections(finetune={"base": "x"}, evaluation=None)
    assert card.sections["finetune"] == {"base": "x"} and "evaluation" not in card.sections


def test_weights_that_do_not_match_the_cards_sha256_are_refused(tmp_path):
    shipped = ModelCard.load()
    weights = tmp_path / "w.safetensors"
    data = bytearray(shipped.face.weights_path.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    shipped.replace(face=dataclasses.replace(shipped.face, weights_path=weights)).save(tmp_path / "w.json")
    with pytest.raises(WeightsError, match="sha256"):
        ModelCard.load(weights).load_state_dict()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(format=7), "not a gan-face model card"),
        (lambda c: c.pop("fusion"), "malformed"),
        (lambda c: c.update(threshold=1.5), "outside"),
        (lambda c: c["detector"].pop("detect_size"), "malformed"),
    ],
)
def test_malformed_cards_name_the_card_and_the_problem(tmp_path, edit, message):
    raw = json.loads(default_card_path().read_text())
    edit(raw)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(WeightsError, match=message) as caught:
        ModelCard.load(path)
    assert str(path) in str(caught.value)


@needs_training
@pytest.mark.parametrize("name", ["gan-face-v1", "gan-face-v2", "gan-face-v3", "gan-face-v4"])
def test_shipped_cards_measured_sections_pass_the_audit(name):
    from gan_face.training.card_audit import audit_card

    card = ModelCard.load(shipped_card_path(name))
    assert audit_card(card) == []
    evaluation = card.sections["evaluation"]
    assert evaluation["threshold"] == card.threshold
    # the leave-one-out folds live in the experiment log beside the card (source tree only): audited the same way
    log_path = REPOSITORY / "models" / "experiments" / f"{name}-log.json"
    assert log_path.name in card.sections["experiment_log"]
    log = json.loads(log_path.read_text())
    assert log["model"] == name and audit_card(card.with_sections(leave_one_out=log.get("leave_one_out"))) == []


def test_shipped_cards_hold_what_scoring_and_evaluation_need_and_not_the_experiment_log():
    # the experiment log (per-epoch history, experiments tried, ablation, leave-one-out) stays out of the
    # installed cards: a card is read at every start-up and travels with every fine-tuned model
    for name in ("gan-face-v1", "gan-face-v2", "gan-face-v3", "gan-face-v4"):
        card = ModelCard.load(shipped_card_path(name))
        assert {"training", "fusion_fit", "evaluation"} <= set(card.sections)
        assert not {"ablation", "leave_one_out"} & set(card.sections)
        assert not {"history", "experiments"} & set(card.sections["training"])
        assert card.path.stat().st_size < 64_000, (name, card.path.stat().st_size)


@needs_training
def test_leave_one_out_stores_its_matrix_in_the_experiment_log_beside_the_card(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("leave_one_out", REPOSITORY / "scripts" / "leave_one_out.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    shipped = ModelCard.load("gan-face-v1")
    card = shipped.with_weights(shutil.copy(shipped.face.weights_path, tmp_path / "m.safetensors"))
    card = card.save(tmp_path / "m.json")
    before = (tmp_path / "m.json").read_text()
    log_path = script.store_in_experiment_log(card.path, {"folds": []})
    assert log_path == tmp_path / "experiments" / "m-log.json"
    assert json.loads(log_path.read_text()) == {"model": "gan-face-v1", "leave_one_out": {"folds": []}}
    log_path.write_text(json.dumps({"model": "gan-face-v1", "ablation": {"kept": 1}}))
    script.store_in_experiment_log(card.path, {"folds": [1]})
    assert json.loads(log_path.read_text())["ablation"] == {"kept": 1}  # other sections kept
    assert (tmp_path / "m.json").read_text() == before  # the card itself is untouched


@needs_training
@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda s: s["evaluation"].update(threshold=0.5), "made at threshold 0.5"),
        (lambda s: s["evaluation"]["conditions"].pop("cropped"), "conditions missing: ['cropped']"),
        (lambda s: s["training"]["train_sources"].append("fake/boredhumans_basemax"), "trained on"),
        (lambda s: s["evaluation"]["conditions"]["avatar"]["by_source"]["all"].update(auc=1.2), "outside [0, 1]"),
        (lambda s: s["fusion_fit"].update(features=["cnn"]), "not the card's fusion features"),
    ],
)
def test_the_audit_finds_a_card_whose_tables_do_not_describe_it(edit, problem):
    import copy

    from gan_face.training.card_audit import audit_card

    card = ModelCard.load(shipped_card_path("gan-face-v1"))
    sections = copy.deepcopy(dict(card.sections))
    edit(sections)
    problems = audit_card(card.with_sections(**sections))
    assert any(problem in p for p in problems), problems


def test_an_older_shipped_model_loads_by_name(astronaut):
    from gan_face import Detector
    from gan_face.card import DEFAULT_MODEL, shipped_models

    assert {"gan-face-v1", DEFAULT_MODEL} <= set(shipped_models())
    assert ModelCard.load("gan-face-v1").name == "gan-face-v1" and ModelCard.load().name == DEFAULT_MODEL
    assert Detector(weights="gan-face-v1").card.name == "gan-face-v1"
    with pytest.raises(WeightsError, match="no such file"):
        ModelCard.load("gan-face-v0")
