import numpy as np
import pytest
from conftest import needs_training

from gan_face._math import score_logit
from gan_face.fusion import Fusion


def test_likelihood_rises_with_each_piece_of_evidence():
    fusion = Fusion(("cnn", "eyes"), (2.0, 1.0), (0.0, -3.0), (1.0, 2.0), intercept=0.1)
    base = {"cnn": 0.5, "eyes": 0.01}
    for name in base:
        lower = fusion.likelihood(base)
        higher = fusion.likelihood({**base, name: 0.99})
        assert higher > lower
    assert fusion.contributions({"cnn": None, "eyes": None}) == {"cnn": 0.0, "eyes": 0.0}
    assert fusion.likelihood({}) == pytest.approx(1 / (1 + np.exp(-0.1)))


def test_round_trip_and_validation():
    fusion = Fusion(("eyes",), (1.5,), (0.2,), (3.0,), intercept=-0.4)
    assert Fusion.from_dict(fusion.to_dict()) == fusion
    with pytest.raises(ValueError):
        Fusion.from_dict({"features": ["a", "b"], "weights": [1], "centers": [0], "scales": [1], "intercept": 0})


@needs_training
def test_fit_separates_and_calibrates():
    from gan_face.training.fitting import fit_fusion
    from gan_face.training.metrics import expected_calibration_error

    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(500, int), np.ones(500, int)]
    informative = 1 / (1 + np.exp(-(labels * 2 - 1) * 2 - rng.normal(0, 1, 1000)))
    noise = rng.uniform(0.01, 0.99, 1000)
    scores = {"good": list(informative), "noise": list(noise)}
    scores["good"][3] = None  # a check that could not judge one image
    fusion = fit_fusion(scores, labels)
    good, bad = fusion.weights
    assert good > 1.0 and abs(bad) < 0.3
    p = np.array([fusion.likelihood({"good": g, "noise": n}) for g, n in zip(informative, noise)])
    assert p[labels == 1].mean() > 0.8 and p[labels == 0].mean() < 0.2
    assert expected_calibration_error(labels, p) < 0.05


@needs_training
def test_threshold_flags_at_most_the_allowed_share():
    from gan_face.training.metrics import threshold_at_fpr

    reals = np.linspace(0, 1, 1000)
    t = threshold_at_fpr(reals, 0.01)
    assert np.mean(reals >= t) <= 0.01
    assert np.mean(reals >= t) >= 0.009
    assert threshold_at_fpr([0.2, 0.2, 0.2], 0.0) > 0.2


def test_score_logit_is_clipped():
    assert score_logit(0.0) == pytest.approx(-13.8155, abs=1e-3)
    assert score_logit(1.0) == pytest.approx(13.8155, abs=1e-3)


@needs_training
def test_the_per_source_limit_guards_a_hard_source_and_skips_one_too_small_to_measure():
    from gan_face.training.datasets import Sample
    from gan_face.training.fitting import strictest_threshold

    identity = Fusion(("cnn",), (1.0,), (0.0,), (1.0,), 0.0)  # likelihood == the cnn score

    def rows(source, scores, label=0):
        return [
            {
                "sample": Sample(f"{source}/{i}.jpg", label, source, "x", str(i)),
                "condition": "avatar",
                "scores": {"cnn": s},
            }
            for i, s in enumerate(scores)
        ]

    hard = rows("real/ffhq", [0.1] * 194 + [0.90, 0.91, 0.92, 0.93, 0.94, 0.95])  # 6 of 200 near the fakes
    easy = rows("real/lfw", [0.05] * 800)
    small = rows("real/tiny", [0.1] * 49 + [0.99])  # 50 photos: 1% of them is half a photo
    data = hard + easy + small + rows("fake/x", [0.97] * 100, 1)
    pooled = strictest_threshold(identity, data, max_fpr=0.01)  # 10 of 1,050 may be flagged: all six pass
    assert pooled <= 0.90
    guarded = strictest_threshold(identity, data, max_fpr=0.01, max_source_fpr=0.01)
    # at most 2 of FFHQ's 200 at or above it; the tiny source's single high photo does not set it
    assert 0.93 < guarded <= 0.94 + 1e-9
    assert sum(r["scores"]["cnn"] >= guarded for r in hard) == 2
