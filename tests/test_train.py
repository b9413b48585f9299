"""Training data plumbing that decides what the CNN sees: class balance, source weights, identity splits."""

import numpy as np
import pytest
from conftest import TRAIN_EXTRA

pytest.importorskip("torch", reason=TRAIN_EXTRA)
pytest.importorskip("sklearn", reason=TRAIN_EXTRA)

from gan_face.training.datasets import Sample
from gan_face.training.loop import source_balanced_weights
from gan_face.training.splits import split_by_identity


def samples(source: str, label: int, n: int) -> list[Sample]:
    return [
        Sample(f"/d/{source}/{i}.jpg", label, source, "gan" if label else "real", f"{source}/{i}")
        for i in range(n)
    ]


def test_classes_get_half_the_mass_and_emphasis_shifts_it_within_a_class():
    data = samples("fake/a", 1, 100) + samples("real/ffhq", 0, 100) + samples("real/lfw", 0, 400)
    usable = np.ones(len(data), bool)
    plain = source_balanced_weights(data, usable)
    source = np.array([s.source for s in data])
    mass = lambda w, name: float(w[source == name].sum())  # noqa: E731
    assert np.isclose(mass(plain, "fake/a"), 0.5)
    # sources by the square root of their size: 10 : 20
    assert np.isclose(mass(plain, "real/ffhq") / mass(plain, "real/lfw"), 0.5)
    emphasised = source_balanced_weights(data, usable, {"real/ffhq": 2.0})
    assert np.isclose(mass(emphasised, "fake/a"), 0.5)  # the class balance is untouched
    assert np.isclose(mass(emphasised, "real/ffhq") / mass(emphasised, "real/lfw"), 1.0)
    # images without a usable face are never drawn
    usable[:10] = False
    assert (source_balanced_weights(data, usable)[:10] == 0).all()


def test_identity_split_keeps_each_person_on_one_side():
    data = [Sample(f"/d/real/c/{i}.jpg", 0, "real/c", "real", f"celeb_{i % 7}") for i in range(70)]
    train, val = split_by_identity(data, 0.3, seed=0)
    assert train and val and len(train) + len(val) == 70
    assert not {s.identity for s in train} & {s.identity for s in val}
