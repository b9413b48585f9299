"""The training wing on constructed data (no ../shared/data): refitting one fusion term, and a whole fine-tune."""

import json

import numpy as np
import pytest
from conftest import TRAIN_EXTRA, face_tree

pytest.importorskip("torch", reason=TRAIN_EXTRA)
pytest.importorskip("sklearn", reason=TRAIN_EXTRA)

from gan_face.card import DEFAULT_MODEL, ModelCard
from gan_face.fusion import Fusion
from gan_face.training.datasets import Sample
from gan_face.training.fitting import refit_one


def _rows(rng, n: int, conditions=("clean", "avatar")) -> list[dict]:
    rows = []
    for condition in conditions:
        for i in range(n):
            label = i % 2
            cnn = float(np.clip(rng.normal(0.75 if label else 0.3, 0.15), 0.01, 0.99))
            eyes = float(np.clip(rng.normal(0.5, 0.2), 0.01, 0.99))
            sample = Sample(
                f"/x/{i}.jpg", label, "fake/a" if label else "real/b", "g" if label else "real", str(i)
            )
            rows.append({"sample": sample, "condition": condition, "scores": {"cnn": cnn, "eyes": eyes}})
    return rows


def test_refit_one_refits_only_that_term_and_caps_the_fpr_in_every_condition():
    base = Fusion(("cnn", "eyes"), (3.0, 0.3), (-0.1, -8.0), (3.9, 6.3), 0.27)
    rows = _rows(np.random.default_rng(0), 400)
    refitted, threshold = refit_one(base, "cnn", rows, max_fpr=0.01)
    assert refitted.weights[1] == base.weights[1] and refitted.centers[1] == base.centers[1]
    assert refitted.weights[0] != base.weights[0] and refitted.weights[0] > 0
    for condition in ("clean", "avatar"):
        reals = [r for r in rows if r["condition"] == condition and r["sample"].label == 0]
        flagged = sum(refitted.likelihood(r["scores"]) >= threshold for r in reals)
        assert flagged <= 0.01 * len(reals)


@pytest.fixture(scope="module")
def tree(tmp_path_factory, astronaut):
    return face_tree(tmp_path_factory.mktemp("tree"), astronaut)


def test_finetune_on_a_tiny_tree_writes_a_loadable_calibrated_model(tree, tmp_path):
    from gan_face import Detector
    from gan_face.training.finetune import FinetuneSettings, finetune

    settings = FinetuneSettings(epochs=1, samples_per_epoch=64, variants=1, val_fraction=0.34)
    out = tmp_path / "adapted.safetensors"
    report = finetune(tree / "real", tree / "fake", out, settings=settings, cache_dir=tmp_path / "cache")
    card = ModelCard.load(out)
    assert card.name == "adapted" and card.face.weights_path == out
    assert card.load_state_dict()  # sha256 matches the file written
    assert 0.0 <= card.threshold <= 1.0
    section = card.sections["finetune"]
    assert section["base"] == DEFAULT_MODEL and section["counts"]["real_train"] >= 6
    assert set(report.before_after["new generator (held out)"]) >= {"before", "after"}
    assert "before" in report.table() and "after" in report.table()
    assert not list(tmp_path.glob("*staging*"))  # nothing half-written is left behind
    verdict = Detector(weights=out).score(str(next((tree / "fake" / "templated").iterdir())))
    assert 0.0 <= verdict.likelihood <= 1.0
    json.dumps(card.to_dict())


def test_a_leave_one_out_fold_on_a_tiny_tree(tmp_path, astronaut):
    """One fold end to end: two fake 'families', one left out; real sources split into trained and evaluated."""
    import shutil

    from gan_face.card import CnnConfig
    from gan_face.training.augment import Augmentation
    from gan_face.training.conditions import condition_with_transform
    from gan_face.training.datasets import index_tree
    from gan_face.training.folds import Fold, run_fold, short_schedule
    from gan_face.training.loop import TrainSettings
    from gan_face.training.pools import ConditionVariants, TrainVariants, build_pool

    root = face_tree(tmp_path / "tree", astronaut, n=8)
    # a second family (the same faces, blurred and re-compressed) and a real source only ever evaluated
    shutil.copytree(root / "fake" / "templated", root / "fake" / "other")
    shutil.copytree(root / "real" / "framed", root / "real" / "held")
    for path in (root / "fake" / "other").iterdir():
        from PIL import Image, ImageFilter

        Image.open(path).filter(ImageFilter.GaussianBlur(1.5)).save(path.with_suffix(".jpg"), quality=60)
        path.unlink()
    for path in (root / "real" / "held").iterdir():
        from PIL import Image

        Image.fromarray(condition_with_transform(np.asarray(Image.open(path)), "laundered", 1)[0]).save(path)
    samples = index_tree(root)
    config = CnnConfig(input_size=64)
    fold = Fold("templated", ("fake/templated",))
    trainable = [s for s in samples if s.source != "real/held"]
    evaluated = [s for s in samples if s.label == 1 or s.source == "real/held"]
    cache = tmp_path / "cache"
    labels = [s.label for s in trainable]
    train_pool = build_pool(trainable, cache, config, variants=1, spec={"t": 1},
                            make_variant=TrainVariants(Augmentation(), 0, labels), workers=1)  # fmt: skip
    eval_pool = build_pool(evaluated, cache, config, variants=2, spec={"e": 1},
                           make_variant=ConditionVariants(("avatar", "gray")), workers=1)  # fmt: skip
    settings = short_schedule(TrainSettings(epochs=2, samples_per_epoch=64, warmup_steps=2, pretrained=False))
    report = run_fold(fold, train_pool, eval_pool, config, settings, tmp_path / "work",
                      real_sources=("real/held",), conditions=("avatar", "gray"))  # fmt: skip
    avatar = report["metrics"]["avatar"]
    assert avatar["templated"]["n_fake"] == 8 and avatar["templated"]["n_real"] == 8
    assert 0.0 <= avatar["templated"]["auc"] <= 1.0 and "real/held" in avatar["real_flagged_at_1pct"]
    assert set(report["metrics"]) == {"avatar", "gray"} and report["kind"] == "gan"
    # the fold's checkpoint and result are on disk: a rerun returns the result without training
    assert (tmp_path / "work" / "templated" / "latest.json").exists()  # the fold's checkpoint (resumable)
    rerun = run_fold(fold, train_pool, eval_pool, config, settings, tmp_path / "work",
                     real_sources=("real/held",), conditions=("avatar", "gray"))  # fmt: skip
    assert rerun == report
    # the fold's logits fused with the eyes (as the detector fuses them)
    from gan_face.align import FaceAligner
    from gan_face.training.facecache import detect_cached
    from gan_face.training.folds import condition_eye_scores, fold_metrics, fused_scores, subset

    logits = np.load(tmp_path / "work" / "templated" / "logits.npy")
    assert logits.shape == (len(evaluated), 2) and np.isnan(logits).all(axis=1).sum() == 8  # the other family
    scored = subset(eval_pool, ~np.isnan(logits).all(axis=1))
    faces = detect_cached([s.path for s in evaluated], FaceAligner(), cache, progress=False)
    eyes = condition_eye_scores(evaluated, faces, ("avatar", "gray"))
    templated = np.array([s.source == "fake/templated" for s in evaluated])
    # the templated fakes' eyes were moved towards the StyleGAN template, the framed reals' were not
    assert eyes[templated].min() > eyes[~templated & (eval_pool.labels == 0)].max()
    cnn_only = Fusion(("cnn", "eyes"), (2.0, 0.0), (0.0, -8.0), (1.0, 6.0), 0.1)
    fused = fused_scores(logits, eyes, cnn_only)
    assert np.array_equal(np.isnan(fused), np.isnan(logits))
    assert fold_metrics(fused, scored, fold, ("real/held",), ("avatar", "gray")) == report["metrics"]
    eyes_only = Fusion(("cnn", "eyes"), (0.0, 1.0), (0.0, -8.0), (1.0, 6.0), 0.0)
    fused = fused_scores(logits, np.where(templated, 0.9, 0.001)[:, None].repeat(2, axis=1), eyes_only)
    metrics = fold_metrics(fused, scored, fold, ("real/held",), ("avatar", "gray"))
    assert metrics["avatar"]["templated"]["auc"] == 1.0 == metrics["gray"]["templated"]["auc"]
    # a frame-view run's logits of the same fold join as the "frame" evidence (absent where it has none)
    frame_logits = np.where(templated, 3.0, -3.0)[:, None].repeat(2, axis=1)
    scored_rows = ~np.isnan(logits[:, 0])
    first = np.flatnonzero(scored_rows)[0]
    frame_logits[first] = np.nan
    frame_only = Fusion(("cnn", "frame"), (0.0, 1.0), (0.0, 0.0), (1.0, 1.0), 0.5)
    fused = fused_scores(logits, eyes, frame_only, frame_logits)
    expected = np.where(templated, 3.5, -2.5)
    expected[first] = 0.5  # no frame logit: the intercept alone
    assert np.allclose(fused[scored_rows, 0], expected[scored_rows])


def test_training_resumes_from_its_checkpoint_to_the_same_weights(tmp_path, astronaut):
    """A run stopped after its first epoch (its time budget) and resumed in a later sitting ends exactly as
    the same run in one go."""
    import dataclasses

    import torch

    from gan_face.card import CnnConfig
    from gan_face.training.augment import Augmentation
    from gan_face.training.datasets import index_tree
    from gan_face.training.loop import TrainSettings, train_cnn
    from gan_face.training.pools import TrainVariants, build_pool

    samples = index_tree(face_tree(tmp_path / "tree", astronaut, n=6))
    config = CnnConfig(input_size=64)
    labels = [s.label for s in samples]
    pool = build_pool(samples, tmp_path / "cache", config, variants=1, spec={"r": 1},
                      make_variant=TrainVariants(Augmentation(), 0, labels), workers=1)  # fmt: skip
    settings = TrainSettings(epochs=3, samples_per_epoch=64, warmup_steps=2, pretrained=False, patience=3)
    whole = train_cnn(pool, None, config, settings, checkpoint_dir=tmp_path / "whole")
    first = train_cnn(
        pool, None, config, dataclasses.replace(settings, time_budget_s=0.0), checkpoint_dir=tmp_path / "b"
    )
    assert [h["epoch"] for h in first.history] == [0]
    resumed = train_cnn(pool, None, config, settings, checkpoint_dir=tmp_path / "b")
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    for key, value in whole.state_dict.items():
        assert torch.equal(value, resumed.state_dict[key]), key


def test_the_face_cache_follows_content_not_path_or_mtime(tmp_path):
    # the shared data is copied afresh each session (new mtimes): the cache must still hit, and an edited file
    # must not reuse its old faces
    import os

    from gan_face.training.facecache import file_key

    original = tmp_path / "a.jpg"
    original.write_bytes(b"\xff\xd8 one version")
    copy = tmp_path / "copy" / "a.jpg"
    copy.parent.mkdir()
    copy.write_bytes(original.read_bytes())
    os.utime(copy, (1_000_000, 1_000_000))
    assert file_key(str(copy)) == file_key(str(original))
    original.write_bytes(b"\xff\xd8 another one")
    os.utime(original, (2_000_000, 2_000_000))
    assert file_key(str(original)) != file_key(str(copy))


def test_a_fold_leaves_out_its_family_and_the_reals_processed_with_it():
    from gan_face.training.folds import folds

    samples = [
        Sample("a.jpg", 1, "fake/kaggle140k_rvf10k_apollophantom", "stylegan", "a"),
        Sample("b.jpg", 0, "real/paired_kaggle140k_rvf10k_apollophantom", "real", "b"),
        Sample("c.jpg", 1, "fake/sd3_fakerjs", "sd3", "c"),
        Sample("d.jpg", 0, "real/celeba_align_nikhil4902", "real", "d"),
    ]
    by_family = {fold.family: fold for fold in folds(samples)}
    assert set(by_family) == {"stylegan1", "sd3"}
    stylegan1, sd3 = by_family["stylegan1"], by_family["sd3"]
    assert not stylegan1.trains_on("fake/kaggle140k_rvf10k_apollophantom")
    assert not stylegan1.trains_on("real/paired_kaggle140k_rvf10k_apollophantom")
    assert stylegan1.trains_on("fake/sd3_fakerjs") and stylegan1.trains_on("real/celeba_align_nikhil4902")
    assert sd3.trains_on("real/paired_kaggle140k_rvf10k_apollophantom") and not sd3.trains_on("fake/sd3_fakerjs")
    # the older protocol, kept to measure the shortcut
    kept = {fold.family: fold for fold in folds(samples, partners={})}
    assert kept["stylegan1"].trains_on("real/paired_kaggle140k_rvf10k_apollophantom")


def test_fold_metrics_also_measure_the_family_against_reals_not_ffhq_aligned():
    """FFHQ-aligned reals sit on the eye template like GAN faces: each fold is also read without them."""
    from gan_face.training.folds import Fold, fold_metrics
    from gan_face.training.pools import CropPool

    sources = ["fake/g"] * 4 + ["real/ffhq"] * 4 + ["real/other"] * 4
    samples = [Sample(f"/x/{i}.jpg", int(s.startswith("fake")), s, "g", str(i)) for i, s in enumerate(sources)]
    pool = CropPool(samples, np.zeros((12, 1, 1, 1, 3), np.uint8), np.ones(12, bool))
    # the fakes outrank the other reals but not the FFHQ ones
    scores = np.r_[[2.0, 2.1, 2.2, 2.3], [3.0, 3.1, 3.2, 3.3], [0.0, 0.1, 0.2, 0.3]][:, None]
    fold = Fold("g", ("fake/g",))
    metrics = fold_metrics(scores, pool, fold, ("real/ffhq", "real/other"), ("clean",), ("real/ffhq",))["clean"]
    assert metrics["g"]["auc"] == 0.5 and metrics["g"]["n_real"] == 8
    unaligned = metrics["g | reals not FFHQ-aligned"]
    assert unaligned["auc"] == 1.0 and unaligned["n_real"] == 4 and unaligned["n_fake"] == 4
    assert set(metrics["real_flagged_at_1pct"]) == {"real/ffhq", "real/other"}
    without = fold_metrics(scores, pool, fold, ("real/ffhq", "real/other"), ("clean",), ())["clean"]
    assert "g | reals not FFHQ-aligned" not in without


def test_the_frame_view_is_the_centred_square_at_low_resolution(astronaut):
    from PIL import Image

    from gan_face.views import frame_view

    wide = astronaut[:300, :450]  # 450 x 300: the centred square starts 75 px in
    view = frame_view(wide, 100)
    assert view.shape == (100, 100, 3) and view.dtype == np.uint8
    expected = np.asarray(Image.fromarray(wide[:, 75:375]).resize((100, 100), Image.Resampling.BOX))
    assert np.array_equal(view, expected)
    assert frame_view(astronaut[:64, :64], 128).shape == (128, 128, 3)  # small images are enlarged
