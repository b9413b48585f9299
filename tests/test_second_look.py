"""The second look (:class:`gan_face.card.SecondLook`): a card that has one keeps it through saving and loading,
the detector takes it exactly for the images whose first likelihood lies in the card's band (and says why the
others did not), and the second fusion then gives their likelihood. The fit's placement at the threshold is
checked on constructed rows. The heads here are made up (a small input, one block): what is tested is the
plumbing, not what a fitted head finds."""

from pathlib import Path

import numpy as np
import pytest
from conftest import needs_training

from gan_face.card import ClipConfig, ClipNetwork, ModelCard, SecondLook, file_sha256
from gan_face.errors import WeightsError
from gan_face.fusion import Fusion
from gan_face.result import NotComputed

REPO = Path(__file__).resolve().parents[1]
ENCODER = REPO / "models" / "clip-vit-b16.safetensors"
FACE = REPO / "examples" / "astronaut.jpg"  # a camera photo: below the threshold, so in a band from 0

pytestmark = pytest.mark.skipif(not ENCODER.exists(), reason="the CLIP encoder weights are not in models/")


def card_with_second_look(tmp_path: Path, band_from: float, weight: float = 1.5) -> ModelCard:
    """The default card with a made-up second look: 64 px, block 3, a random head; the second fusion is the first
    one plus the second look's term."""
    from safetensors.numpy import save_file

    base = ModelCard.load()
    rng = np.random.default_rng(0)
    head = tmp_path / "second-look-head.safetensors"
    save_file(
        {
            "mean": np.zeros(768, np.float32),
            "scale": np.full(768, 10.0, np.float32),
            "coef": rng.normal(0, 0.2, 768).astype(np.float32),
            "intercept": np.zeros(1, np.float32),
        },
        str(head),
    )
    config = ClipConfig(input_size=64, blocks=(3,), view="frame")
    network = ClipNetwork(config, ENCODER, head, file_sha256(ENCODER), file_sha256(head))
    f = base.fusion
    second = Fusion(f.features + ("second_look",), f.weights + (weight,), f.centers + (0.0,), f.scales + (1.0,),
                    f.intercept - 0.3)  # fmt: skip
    card = base.replace(name="with-second-look", second_look=SecondLook(network, second, band_from))
    return card.save(tmp_path / "with-second-look.json")


def test_a_card_keeps_its_second_look_through_saving_and_loading(tmp_path):
    saved = card_with_second_look(tmp_path, band_from=0.25)
    loaded = ModelCard.load(saved.path)
    assert loaded.second_look == saved.second_look
    assert loaded.second_look.clip.config.input_size == 64
    # the image that got a second look is decided by the second fusion, the others by the card's
    assert loaded.fusion_for({"clip": 0.7, "second_look": 0.9}) is loaded.second_look.fusion
    assert loaded.fusion_for({"clip": 0.7, "second_look": None}) is loaded.fusion


def test_a_second_look_band_above_the_threshold_is_refused(tmp_path):
    saved = card_with_second_look(tmp_path, band_from=0.25)
    raw = saved.to_dict(saved.path)
    raw["second_look"]["from"] = saved.threshold + 0.001
    with pytest.raises(WeightsError, match="second_look"):
        ModelCard.from_dict(raw, saved.path)


def test_the_detector_takes_the_second_look_in_the_band_and_fuses_it(tmp_path):
    from gan_face.detector import Detector

    plain = Detector().score(FACE)
    detector = Detector(card_with_second_look(tmp_path, band_from=0.0).path)
    assert "second_look" in detector.evidence_names
    verdict = detector.score(FACE)
    looked = verdict.evidence["second_look"]
    assert looked.score is not None and not isinstance(looked, NotComputed)
    # the first look is the card's fusion of the same evidence: what the detector without a second look says
    assert looked.details["first_likelihood"] == pytest.approx(plain.likelihood, abs=1e-9)
    scores = {name: result.score for name, result in verdict.evidence.items()}
    assert verdict.likelihood == pytest.approx(detector.card.second_look.fusion.likelihood(scores), abs=1e-12)
    assert verdict.likelihood != pytest.approx(plain.likelihood, abs=1e-6)
    assert "second_look" in verdict.contributions


def test_outside_the_band_the_first_look_decides_and_the_second_says_why_it_was_not_taken(tmp_path):
    from gan_face.detector import Detector

    plain = Detector().score(FACE)
    card = card_with_second_look(tmp_path, band_from=ModelCard.load().threshold)  # an empty band
    detector = Detector(card.path)
    verdict = detector.score(FACE)
    looked = verdict.evidence["second_look"]
    assert isinstance(looked, NotComputed) and looked.score is None
    assert "first look" in looked.explanation
    assert verdict.likelihood == pytest.approx(plain.likelihood, abs=1e-12)
    assert "second_look" in verdict.not_computed
    faceless = detector.score(np.full((200, 200, 3), 128, np.uint8))
    assert isinstance(faceless.evidence["second_look"], NotComputed)


def rows_of(first_logits, second_logits, labels, sources=None):
    """Constructed rows: the first look's one score (``clip``), the second look's, one condition."""
    from gan_face.training.datasets import Sample

    sources = sources or ["real/a" if y == 0 else "fake/b" for y in labels]
    rows = []
    for i, (a, b, y, source) in enumerate(zip(first_logits, second_logits, labels, sources)):
        path = f"{source}/{i}.jpg"
        sample = Sample(path, int(y), source, "real" if y == 0 else "gen", path)
        scores = {"clip": float(1 / (1 + np.exp(-a))), "second_look": float(1 / (1 + np.exp(-b)))}
        rows.append({"sample": sample, "index": i, "condition": "avatar", "scores": scores})
    return rows


@needs_training
def test_the_second_fusion_is_placed_where_the_threshold_keeps_the_rule():
    from gan_face.training.second_look import (
        final_likelihoods,
        first_likelihoods,
        fit_second_fusion,
        in_band,
        place_at_threshold,
    )

    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(2000, int), np.ones(600, int)]
    # the first look separates the classes a little, the second better
    first_logits = rng.normal(np.where(labels == 1, 2.5, -1.0), 1.5)
    second_logits = rng.normal(np.where(labels == 1, 2.0, -2.0), 1.0)
    rows = rows_of(first_logits, second_logits, labels)
    first_fusion = Fusion(("clip",), (1.0,), (0.0,), (1.0,), 0.0)
    first = first_likelihoods(first_fusion, rows)
    threshold = float(np.sort(first[labels == 0])[-5])  # the first look flags 4 of 2,000 real photos
    band = in_band(first, 0.3, threshold)
    for row, b in zip(rows, band):  # the second look is taken in the band only
        if not b:
            row["scores"]["second_look"] = None
    second = fit_second_fusion(rows, band, ("clip",))
    placed = place_at_threshold(second, rows, first, band, threshold, max_fpr=0.005, max_source_fpr=None)
    final = final_likelihoods(first, band, placed, rows)
    flagged = final >= threshold
    assert flagged[labels == 0].sum() <= 10  # 0.5% of 2,000
    assert flagged[labels == 1].mean() > (first[labels == 1] >= threshold).mean()  # the second look catches more
    # a little more shift would break the rule: the placement is the most the rule allows
    looser = Fusion(placed.features, placed.weights, placed.centers, placed.scales, placed.intercept + 0.05)
    assert (final_likelihoods(first, band, looser, rows)[labels == 0] >= threshold).sum() > 10


@needs_training
def test_the_audit_asks_a_card_with_a_second_look_where_its_head_learnt(tmp_path):
    from gan_face.training.card_audit import audit_card

    card = card_with_second_look(tmp_path, band_from=0.25)
    assert any("second_look_fit" in problem for problem in audit_card(card))
    recorded = card.with_sections(second_look_fit={"head": {"train_sources": ["fake/x", "real/y"]}})
    assert not any("second_look_fit" in problem for problem in audit_card(recorded))


@needs_training
def test_the_matrix_gives_a_fold_the_second_look_in_the_band_only():
    from gan_face.training.clip_matrix import SecondLookFolds, fused_metrics

    # six images: 0-2 real, 3-5 generated; the fused first look is the fold's clip logit alone
    labels = np.array([0, 0, 0, 1, 1, 1])
    clip_logits = np.array([-4.0, 0.5, 1.0, 0.4, 3.0, 6.0])  # 1 to 4 in the band [0.55, 0.99)
    second_logits = np.array([0.0, -3.0, np.nan, 5.0, 0.0, 0.0])  # image 2 has no second-look tokens
    rows = [{"index": i, "condition": "avatar", "scores": {}} for i in range(6)]
    first = Fusion(("clip",), (1.0,), (0.0,), (1.0,), 0.0)
    second = Fusion(("clip", "second_look"), (0.5, 1.0), (0.0, 0.0), (1.0, 1.0), 0.0)
    network = ClipNetwork(ClipConfig(input_size=64, blocks=(3,)), ENCODER, ENCODER)
    folds = SecondLookFolds(np.zeros((6, 12, 768)), ~np.isnan(second_logits), np.ones(6, bool), (3,), 8, 0.1,
                            SecondLook(network, second, 0.55), 0.99)  # fmt: skip
    fakes, reals = labels == 1, labels == 0
    without = fused_metrics((first, rows, 0.99), "avatar", clip_logits, fakes, reals, reals, labels)
    with_it = fused_metrics((first, rows, 0.99), "avatar", clip_logits, fakes, reals, reals, labels,
                            (folds, second_logits))  # fmt: skip
    # image 3 (generated, 0.60 at first) is caught by the second look: 0.5 * 0.4 + 5.0 log-odds
    assert without["caught_at_threshold"] == pytest.approx(1 / 3)
    assert with_it["caught_at_threshold"] == pytest.approx(2 / 3)
    assert with_it["second_look_share"] == {"real": pytest.approx(1 / 3), "generated": pytest.approx(2 / 3)}
    assert with_it["band_without_second_look_tokens"] == 1
    assert with_it["auc"] > without["auc"]
