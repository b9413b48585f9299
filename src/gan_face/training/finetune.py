"""Adapting the shipped model to a new generator from a few hundred of its faces, without forgetting the old ones.

How the old knowledge is kept:

* the stem and the first blocks of the CNN are frozen (low-level features stay those of the base);
* the learning rate is low and training short;
* on the user's real photos the CNN is distilled towards the base model's own outputs, so what it thought of
  real people does not drift (the false-positive side is the one users pay for).

Then the CNN's term of the fusion (its weight and centre, and the intercept) and the threshold are refitted on
a held-out part of the user's data (the calibration half); the other checks keep their weights, which a few
dozen images could not estimate better. The before/after metrics are measured on the other held-out half,
which neither step has seen.
Needs ``gan-face[train]``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..align import FaceAligner
from ..card import ModelCard, file_sha256, save_weights
from ..errors import TrainingDataError
from ..outputs.files import collect_files
from .augment import Augmentation
from .datasets import Sample, index_tree
from .facecache import detect_cached
from .fitting import refit_one
from .loop import TrainSettings, train_cnn
from .metrics import metrics
from .pools import ConditionVariants, TrainVariants, build_pool
from .scoring import score_samples

log = logging.getLogger(__name__)

#: Conditions used to refit the fusion and to measure before/after: the file as given, and as an avatar.
FINETUNE_CONDITIONS = ("clean", "avatar")


@dataclass
class FinetuneSettings:
    epochs: int = 8
    samples_per_epoch: int = 1600
    lr: float = 4e-4
    freeze_blocks: int = 4  # stem + this many of the 16 blocks stay as in the base model
    distill_weight: float = 1.0
    variants: int = 4
    val_fraction: float = 0.3
    seed: int = 0


@dataclass
class FinetuneReport:
    output: str
    counts: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)  # (path, reason)
    before_after: dict = field(default_factory=dict)  # data set -> {"before": metrics, "after": metrics}
    minutes: float = 0.0

    def table(self) -> str:
        lines = [
            f"{'held-out data':32s} {'':6s} {'AUC':>7s} {'TPR@1%FPR':>10s} {'FPR@thr':>8s} "
            f"{'n real':>7s} {'n fake':>7s}"
        ]
        for name, pair in self.before_after.items():
            for when in ("before", "after"):
                m = pair[when]
                lines.append(
                    f"{name:32s} {when:6s} {m['auc']:7.4f} {m['tpr_at_1pct_fpr']:10.4f} "
                    f"{m['fpr_at_threshold']:8.4f} "
                    f"{m['n_real']:7d} {m['n_fake']:7d}"
                )
        return "\n".join(lines)


def _user_samples(real_dir: str, fake_dir: str) -> list[Sample]:
    samples = []
    for folder, label in ((real_dir, 0), (fake_dir, 1)):
        kind = "real" if label == 0 else "fake"
        for f in collect_files([folder], recursive=True):
            samples.append(
                Sample(f.path, label, f"user/{kind}", "real" if label == 0 else "new-generator", f.path)
            )
    return samples


def _split(samples: Sequence[Sample], fraction: float, seed: int) -> tuple[list, list, list]:
    """Train / calibration / report parts, stratified by label; the held-out fraction is halved between the
    last two."""
    rng = np.random.default_rng(seed)
    train, calibration, report = [], [], []
    for label in (0, 1):
        group = [s for s in samples if s.label == label]
        order = rng.permutation(len(group))
        held = max(2, int(round(fraction * len(group))))
        for rank, i in enumerate(order):
            (report if rank < held // 2 else calibration if rank < held else train).append(group[i])
    return train, calibration, report


def _compare(base_card: str, new_card: str, samples: Sequence[Sample], threshold_note: str) -> dict:
    from ..detector import Detector

    result = {}
    for when, card in (("before", base_card), ("after", new_card)):
        detector = Detector(weights=card)
        rows = score_samples(detector, samples, FINETUNE_CONDITIONS, progress=False)
        labels = np.array([r["sample"].label for r in rows])
        result[when] = metrics(labels, np.array([r["likelihood"] for r in rows]), detector.threshold)
    result["note"] = threshold_note
    return result


def finetune(
    real_dir: str,
    fake_dir: str,
    output: str | os.PathLike[str],
    *,
    base: str | os.PathLike[str] | None = None,
    settings: Optional[FinetuneSettings] = None,
    base_validation: str | os.PathLike[str] | None = None,
    base_validation_max: int = 400,
    cache_dir: str | os.PathLike[str] | None = None,
    device: Optional[str] = None,
) -> FinetuneReport:
    """Fine-tune the base model (``None``: the shipped one) on a folder of real photos and one of the new
    generator's faces; write ``output`` (``.safetensors``) and its card (``.json``) and return the report.

    Unreadable files and files without a face are skipped and listed. ``base_validation``, a tree with
    ``real/`` and ``fake/``, measures what the base model knew, before and after (at most
    ``base_validation_max`` images, drawn evenly).
    """
    from ..cnn import load_cnn

    settings = settings or FinetuneSettings()
    started = time.time()
    output = Path(output).with_suffix(".safetensors")
    base_card = ModelCard.load(base)
    if base_card.cnn is None:
        raise TrainingDataError(f"{base_card.path}: the base model has no CNN to fine-tune")
    # refuses pickle payloads before any work is done; unfused, as its weights also start the student
    teacher = load_cnn(base_card, device="cpu", fuse=False).model
    config = base_card.cnn
    cache = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "gan-face-finetune-cache"
    report = FinetuneReport(output=str(output))

    samples = _user_samples(real_dir, fake_dir)
    aligner = FaceAligner(base_card.detector)
    faces = detect_cached([s.path for s in samples], aligner, cache, progress=False)
    usable = []
    for sample in samples:
        if faces[sample.path] is None:
            report.skipped.append((sample.path, "unreadable image"))
        elif not faces[sample.path]:
            report.skipped.append((sample.path, "no face found"))
        else:
            usable.append(sample)
    for label in (0, 1):
        if sum(s.label == label for s in usable) < 10:
            raise TrainingDataError(
                f"need at least 10 usable {'real' if label == 0 else 'fake'} images, found fewer"
            )
    train, calibration, held_report = _split(usable, settings.val_fraction, settings.seed)
    report.counts = {
        "real_train": sum(s.label == 0 for s in train),
        "fake_train": sum(s.label == 1 for s in train),
        "real_calibration": sum(s.label == 0 for s in calibration),
        "fake_calibration": sum(s.label == 1 for s in calibration),
        "real_report": sum(s.label == 0 for s in held_report),
        "fake_report": sum(s.label == 1 for s in held_report),
        "skipped": len(report.skipped),
    }
    log.info("fine-tuning on %s", report.counts)

    aug = Augmentation()
    train_pool = build_pool(
        train,
        cache,
        config,
        variants=settings.variants,
        make_variant=TrainVariants(aug, settings.seed, [s.label for s in train]),
        spec={"kind": "finetune-train", "seed": settings.seed, "aug": str(aug)},
        aligner=aligner,
        workers=1,
    )
    val_pool = build_pool(
        calibration,
        cache,
        config,
        variants=len(FINETUNE_CONDITIONS),
        make_variant=ConditionVariants(FINETUNE_CONDITIONS),
        spec={"kind": "finetune-val"},
        aligner=aligner,
        workers=1,
    )
    teacher.eval()
    is_real = torch.tensor([s.label == 0 for s in train])

    def distill(logits: torch.Tensor, inputs: torch.Tensor, index: np.ndarray) -> torch.Tensor:
        """Keep the base model's view of real photos: match its logits on the reals of the batch."""
        reals = is_real[torch.from_numpy(index)]
        if not reals.any():
            return logits.sum() * 0.0
        with torch.no_grad():
            target = teacher(inputs[reals])
        return settings.distill_weight * torch.mean((logits[reals] - target) ** 2)

    train_settings = TrainSettings(
        epochs=settings.epochs,
        samples_per_epoch=settings.samples_per_epoch,
        lr=settings.lr,
        warmup_steps=20,
        patience=settings.epochs,
        seed=settings.seed,
        pretrained=False,
        freeze=settings.freeze_blocks,
    )
    result = train_cnn(
        train_pool,
        val_pool,
        config,
        train_settings,
        val_conditions=FINETUNE_CONDITIONS,
        init_state={k: v.float().clone() for k, v in teacher.state_dict().items()},
        extra_loss=distill,
    )

    # everything is written under staging names and renamed at the very end: an interrupted run never leaves
    # an uncalibrated model under the name the user asked for
    staged_weights = output.with_name(output.stem + ".staging.safetensors")
    save_weights(result.state_dict, staged_weights, {"format": "gan-face", "base": base_card.name})
    card = base_card.with_weights(staged_weights).replace(
        name=output.stem,
        description=f"{base_card.name} fine-tuned on a new generator's faces ({output.stem}).",
    )
    card_path = staged_weights.with_suffix(".json")
    card = card.save(card_path)

    # refit fusion and threshold on the calibration half, with the fine-tuned CNN
    from ..detector import Detector

    rows = score_samples(Detector(weights=card_path), calibration, FINETUNE_CONDITIONS, progress=False)
    fusion, threshold = refit_one(base_card.fusion, "cnn", rows, max_fpr=0.01)
    card = card.replace(fusion=fusion, threshold=threshold).save(card_path)

    note = "fusion and threshold refitted on the calibration half; these metrics are on the other half"
    report.before_after["new generator (held out)"] = _compare(
        str(base_card.path), str(card_path), held_report, note
    )
    if base_validation:
        base_samples = index_tree(base_validation)
        step = max(1, len(base_samples) // base_validation_max)
        report.before_after["base validation data"] = _compare(
            str(base_card.path), str(card_path), base_samples[::step], "the base model's held-out data"
        )
    report.minutes = round((time.time() - started) / 60, 2)
    finetune_section = {
        "base": base_card.name,
        "base_weights_sha256": file_sha256(base_card.weights_path) if base_card.weights_path else None,
        "counts": report.counts,
        "skipped": [{"path": p, "reason": r} for p, r in report.skipped],
        "settings": asdict(settings),
        "best_epoch": result.best_epoch,
        "history": result.history,
        "before_after": report.before_after,
        "minutes": report.minutes,
    }
    os.replace(staged_weights, output)
    card.replace(weights_path=output).with_sections(finetune=finetune_section).save(output.with_suffix(".json"))
    card_path.unlink()
    return report
