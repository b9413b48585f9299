"""Adapting the shipped model to a new generator from a few hundred of its faces, without forgetting the old ones.

A base model with a clip view (gan-face-v3) is adapted by refitting its clip head (:mod:`.finetune_clip`): the
user's training images, under every evaluation condition, are encoded by the frozen encoder and added to the
sufficient statistics the base head ships with (the user's fakes as one more fake source, the reals as one
more real source, times ``head_emphasis``), and the head is solved again: minutes, and the base's judgement of
every other source kept because its statistics are. The new card names the same encoder file. The CNN
fine-tune below is then opt-in (``train_cnn=True``); for a base without a clip view (gan-face-v1, v2) it is
what a fine-tune does.

How the CNN fine-tune keeps the old knowledge:

* the stem and the first blocks of the CNN are frozen (low-level features stay those of the base);
* the learning rate is low and training short;
* on the user's real photos the CNN is distilled towards the base model's own outputs, so what it thought of
  real people does not drift (the false-positive side is the one users pay for).

Then the refitted evidence's terms of the fusion (the clip view's and/or the CNN's weight and centre, and the
intercept) and the threshold are refitted on
a held-out part of the user's data (the calibration half); the other checks keep their weights, which a few
dozen images could not estimate better. A threshold at 1% false positives needs at least 100 real photos in
that half (:data:`MIN_CALIBRATION_REALS`); with fewer, the base model's calibration and threshold are kept and
the report says so, and a refitted threshold below the base model's is not used unless asked for: a small
calibration set must never quietly make the model flag more real people. The before/after metrics and the
expected false-positive rate (with its 95% interval) are measured on the other held-out half, which neither
step has seen. Needs ``gan-face[train]``.

A run goes in steps, each its own function: :func:`check_data` (the folders counted, faces searched, the split
and what it allows, all said before any training, with the steps that will run), :func:`_refit_head` (the clip
head, for a base with a clip view), :func:`_train` (the CNN, with a checkpoint after every epoch),
:func:`_calibrate` (fusion terms and threshold), then the before/after measurements and the files. Its
unfinished state lives beside the output, in ``<output>.partial/`` (:func:`partial_dir`): ``run.json`` (what the
run was asked to do), the clip features computed so far, the training checkpoint, and the face and crop cache
unless ``cache_dir`` is given. An interrupted run continues with ``resume=True`` (features already computed
are not computed again; training from its last finished epoch) and ends exactly as it would have in one
sitting; the folder is removed once the model is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..align import FaceAligner
from ..card import ModelCard, save_weights
from ..errors import ImageLoadError, TrainingDataError
from ..files import collect_files
from ..io import load_image
from .augment import Augmentation
from .datasets import Sample, index_tree
from .facecache import detect_cached
from .finetune_clip import HEAD_CONDITIONS, estimate_seconds, refit_head, user_features
from .fitting import refit_terms
from .loop import Checkpoint, TrainSettings, train_cnn
from .metrics import clopper_pearson, metrics
from .pools import ConditionVariants, TrainVariants, build_pool
from .scoring import row_likelihoods, score_samples

log = logging.getLogger(__name__)

#: Conditions used to refit the fusion and to measure before/after: the file as given, and as an avatar.
FINETUNE_CONDITIONS = ("clean", "avatar")


#: A threshold at 1% FPR is placed so that 1 real photo in 100 may score above it: with fewer real photos in
#: the calibration share there is no such place, and the threshold would be a guess.
MIN_CALIBRATION_REALS = 100
#: Fewer usable faces than this in either folder cannot train anything.
MIN_IMAGES_PER_CLASS = 10


def _with_notes(lines: list[str], **notes: list[str]) -> str:
    """A report's lines, then one line per note, labelled (``warning: ...``)."""
    return "\n".join(lines + [f"{label}: {note}" for label, items in notes.items() for note in items])


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
    #: Refit the calibration and threshold only with at least this many real photos in the calibration share;
    #: with fewer, the base model's are kept (see the module docstring).
    min_calibration_reals: int = MIN_CALIBRATION_REALS
    #: A refitted threshold below the base model's is used only if this is set; otherwise the base's is kept.
    allow_lower_threshold: bool = False
    #: Fine-tune the face CNN: ``None`` does it only for a base without a clip view (whose head is refitted
    #: instead); ``True`` does it as well as the head step, ``False`` never.
    train_cnn: Optional[bool] = None
    #: How much the user's fakes (and reals) weigh in the refitted clip head, in sources of the base's class.
    head_emphasis: float = 2.0
    workers: int = 2  # threads computing the clip features (one encoder stream each)
    progress: bool = False  # a progress bar (epochs, loss, time left) on stderr

    def steps(self, base_card: ModelCard) -> tuple[bool, bool]:
        """Whether this run refits the clip head and whether it fine-tunes the CNN, for ``base_card``."""
        head = base_card.clip is not None
        return head, (not head) if self.train_cnn is None else bool(self.train_cnn)


@dataclass
class FinetuneReport:
    output: str
    counts: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)  # (path, reason)
    before_after: dict = field(default_factory=dict)  # data set -> {"before": metrics, "after": metrics}
    minutes: float = 0.0
    threshold: float = float("nan")
    base_threshold: float = float("nan")
    calibration: str = ""  # what was done to the calibration and threshold, and why
    refitted: list = field(default_factory=list)  # what this run changed in the base model, in words
    #: real photos of the report half flagged at the new threshold (avatar condition): count, of, 95% interval
    expected_fpr: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    def table(self) -> str:
        lines = [
            f"{'held-out data':32s} {'':6s} {'AUC':>7s} {'TPR@1%FPR':>10s} {'FPR@thr':>8s} "
            f"{'real':>7s} {'fake':>7s}"
        ]
        for name, pair in self.before_after.items():
            for when in ("before", "after"):
                m = pair[when]
                lines.append(
                    f"{name:32s} {when:6s} {m['auc']:7.4f} {m['tpr_at_1pct_fpr']:10.4f} "
                    f"{m['fpr_at_threshold']:8.4f} "
                    f"{m['n_real'] // len(FINETUNE_CONDITIONS):7d} {m['n_fake'] // len(FINETUNE_CONDITIONS):7d}"
                )
        if self.before_after:  # the columns count images; each was scored as it is and as an avatar
            lines.append(f"(real, fake: images, each scored {' and '.join(FINETUNE_CONDITIONS)})")
        lines.append(f"threshold {self.threshold:.4f} (base model: {self.base_threshold:.4f}); {self.calibration}")
        if self.expected_fpr:
            f = self.expected_fpr
            lines.append(
                f"expected false-positive rate: {f['flagged']} of {f['n_real']} held-out real photos flagged as "
                f"avatars ({f['rate']:.1%}; 95% interval {f['low']:.1%} to {f['high']:.1%})"
            )
        return _with_notes(lines, refitted=self.refitted, warning=self.warnings)


def partial_dir(output: str | os.PathLike[str]) -> Path:
    """Where a run writing ``output`` keeps its unfinished state: ``adapted.partial/`` beside
    ``adapted.safetensors``."""
    return Path(output).with_suffix(".partial")


#: The settings a run's result depends on, as the command line names them (a resume must match every one).
_SETTING_NAMES = {
    "real": "--real",
    "fake": "--fake",
    "real_files": "the files in --real",
    "fake_files": "the files in --fake",
    "base": "--base",
    "base_weights_sha256": "the base model's weights",
    "base_validation": "--base-val",
    "epochs": "--epochs",
    "samples_per_epoch": "--samples-per-epoch",
    "val_fraction": "--val-fraction",
    "train_cnn": "--cnn/--no-cnn",
    "head_emphasis": "--head-emphasis",
    "base_clip_head_sha256": "the base model's clip head",
}


def saved_progress(output: str | os.PathLike[str]) -> Optional[dict]:
    """What an unfinished run writing ``output`` has kept: ``partial`` (its folder), ``epochs_done``, ``epochs``
    (0 when the run trains no CNN) and ``features_done`` (images whose clip features are kept); ``None`` when
    there is no such run."""
    partial = partial_dir(Path(output).with_suffix(".safetensors"))
    if not (partial / "run.json").exists():
        return None
    settings = json.loads((partial / "run.json").read_text())["settings"]
    latest = Checkpoint(partial / "checkpoint", {}).latest()
    features_done = sum(len(json.loads(p.read_text())) for p in (partial / CLIP_FEATURES).glob("features_*.json")
                        if p.with_suffix(".npy").exists())  # fmt: skip
    return {"partial": partial, "epochs_done": 0 if latest is None else latest["epoch"] + 1,
            "epochs": settings["epochs"] if settings.get("train_cnn", True) else 0,
            "features_done": features_done}  # fmt: skip


#: The folder of ``<output>.partial/`` that keeps the user's clip features.
CLIP_FEATURES = "clip_features"


def remove_partial(output: str | os.PathLike[str]) -> None:
    """Forget an unfinished run writing ``output``, to start afresh (only a folder this module wrote)."""
    partial = partial_dir(Path(output).with_suffix(".safetensors"))
    if not partial.exists():
        return
    if not (partial / "run.json").exists() and any(partial.iterdir()):
        raise TrainingDataError(f"{partial}: not an unfinished fine-tuning run (no run.json); remove it yourself")
    shutil.rmtree(partial)


def _user_samples(real_dir, fake_dir) -> tuple[list[Sample], dict[str, str]]:
    """The samples of both folders, and the files discovery already knows to be unreadable (path -> why)."""
    samples, problems = [], {}
    for folder, label in ((real_dir, 0), (fake_dir, 1)):
        kind = "real" if label == 0 else "fake"
        for f in collect_files([folder], recursive=True):
            samples.append(
                Sample(f.path, label, f"user/{kind}", "real" if label == 0 else "new-generator", f.path)
            )
            if f.problem is not None:
                problems[f.path] = f.problem
            elif not os.access(f.path, os.R_OK):
                problems[f.path] = "permission denied"
    return samples, problems


def _run_settings(real_dir, fake_dir, base_card: ModelCard, settings: FinetuneSettings, base_validation,
                  base_validation_max: int, samples: Sequence[Sample]) -> dict:  # fmt: skip
    """Everything the result depends on (the folders, their files, the base model, the settings): what
    ``run.json`` keeps and a resume must match."""

    def files(folder, label: int) -> str:
        listing = []
        for s in samples:
            if s.label == label:
                try:
                    size = os.stat(s.path).st_size
                except OSError:
                    size = -1
                listing.append(f"{os.path.relpath(s.path, folder)}\t{size}")
        digest = hashlib.sha256("\n".join(sorted(listing)).encode("utf-8", "surrogateescape")).hexdigest()
        return f"{len(listing)} files, names and sizes sha256 {digest[:16]}"

    head, cnn = settings.steps(base_card)
    return {
        "real": os.path.abspath(real_dir),
        "fake": os.path.abspath(fake_dir),
        "real_files": files(real_dir, 0),
        "fake_files": files(fake_dir, 1),
        "base": base_card.name,
        "base_weights_sha256": base_card.face.sha256,
        "base_validation": None if base_validation is None else os.path.abspath(base_validation),
        "base_validation_max": base_validation_max,
        "base_clip_head_sha256": base_card.clip.head_sha256 if head else None,
        **{k: v for k, v in asdict(settings).items() if k not in ("progress", "workers")},
        "train_cnn": cnn,  # what the run does, not how it was asked
    }


def _open_partial(partial: Path, run_settings: dict, resume: bool) -> bool:
    """Start (or, with ``resume``, reopen) the run's folder; ``True`` when this call created it."""
    record = partial / "run.json"
    if resume:
        if not record.exists():
            raise TrainingDataError(f"{partial}: nothing to resume (no unfinished run writes this output)")
        saved = json.loads(record.read_text())["settings"]
        now = json.loads(json.dumps(run_settings))
        differences = [
            f"{_SETTING_NAMES.get(k, k)}: {saved.get(k)!r} in the saved run, {now.get(k)!r} now"
            for k in sorted(set(saved) | set(now))
            if saved.get(k) != now.get(k)
        ]
        if differences:
            raise TrainingDataError(
                f"cannot resume {partial}: this command differs from the run it holds ({'; '.join(differences)}). "
                "Give the saved run's settings, or start afresh without --resume (--overwrite removes it)"
            )
        return False
    if partial.exists():
        raise TrainingDataError(
            f"{partial}: an unfinished run writing this output is there; continue it with --resume "
            "(resume=True), or start afresh with --overwrite (which removes it)"
        )
    partial.mkdir()
    staging = record.with_suffix(".staging")
    staging.write_text(json.dumps({"format": "gan-face-finetune-run", "settings": run_settings}, indent=1))
    os.replace(staging, record)
    return True


@dataclass
class FolderCount:
    """One folder as the pre-check found it."""

    folder: str
    kind: str  # "real photos" or "new generator"
    files: int = 0
    faces: int = 0
    unreadable: list = field(default_factory=list)  # (path, why)
    no_face: list = field(default_factory=list)  # paths


@dataclass
class DataCheck:
    """What the folders hold and what that allows, known before any training starts."""

    folders: list
    train: list
    calibration: list
    held_report: list
    warnings: list = field(default_factory=list)
    steps: list = field(default_factory=list)  # the steps this run will take, in words

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return [
            *(item for f in self.folders for item in f.unreadable),
            *((path, "no face found") for f in self.folders for path in f.no_face),
        ]

    @property
    def counts(self) -> dict:
        parts = {"train": self.train, "calibration": self.calibration, "report": self.held_report}
        counts = {f"{kind}_{part}": sum(s.label == label for s in samples)
                  for part, samples in parts.items() for kind, label in (("real", 0), ("fake", 1))}  # fmt: skip
        return {**counts, "skipped": len(self.skipped)}

    def summary(self, named: int = 20) -> str:
        """The pre-check in a few lines: per folder, image files and faces found, the files skipped (at most
        ``named`` faceless ones named), the split and the warnings."""
        lines = []
        for f in self.folders:
            line = f"{f.kind:13s} {f.folder}: {f.files} image files, {f.faces} with a face found"
            problems = [f"{len(f.no_face)} without a face"] * bool(f.no_face)
            problems += [f"{len(f.unreadable)} unreadable"] * bool(f.unreadable)
            lines.append(line + (f" ({', '.join(problems)})" if problems else ""))
        lines += [f"unreadable: {path}: {why}" for f in self.folders for path, why in f.unreadable]
        faceless = [path for f in self.folders for path in f.no_face]
        if faceless:
            more = f" and {len(faceless) - named} more (all listed in the new card)" * (len(faceless) > named)
            lines.append(f"no face found: {', '.join(faceless[:named])}{more}")
        c = self.counts
        lines.append(
            f"split: training {c['real_train']} real + {c['fake_train']} fake; calibration {c['real_calibration']}"
            f" + {c['fake_calibration']}; before/after report {c['real_report']} + {c['fake_report']}"
        )
        return _with_notes(lines, step=self.steps, warning=self.warnings)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _describe_steps(data: DataCheck, base_card: ModelCard, settings: FinetuneSettings) -> list[str]:
    head, cnn = settings.steps(base_card)
    steps = []
    if head:
        n = len(data.train)
        steps.append(
            f"clip features of the {n} training images x {len(HEAD_CONDITIONS)} variants "
            f"({', '.join(HEAD_CONDITIONS)}): about {_duration(estimate_seconds(n))} on 2 idle cores (far longer "
            "while other jobs hold them); "
            f"then the clip head refitted on the base's statistics plus them (emphasis {settings.head_emphasis:g})"
        )
    if cnn:
        steps.append(f"the face CNN fine-tuned: {settings.epochs} epochs of {settings.samples_per_epoch} faces")
    elif base_card.clip is not None:
        steps.append("the face CNN kept as in the base model (--cnn fine-tunes it too)")
    weighed = " and ".join(["the clip view's"] * head + ["the face CNN's"] * cnn)
    steps.append(f"then how much {weighed} evidence weighs in the likelihood, and the threshold, are refitted on "
                 "the calibration share, if it holds enough real photos")  # fmt: skip
    return steps


def check_data(samples: Sequence[Sample], problems: dict, folders: tuple, aligner: FaceAligner, cache: Path,
               settings: FinetuneSettings, base_threshold: float) -> DataCheck:  # fmt: skip
    """Search the faces (cached: training needs them anyway), count what each folder holds, split it, and say
    what the split allows, before any training. Raises :class:`TrainingDataError` (naming the folder) when a
    folder has too few usable faces to train on."""
    readable = [s.path for s in samples if s.path not in problems]
    faces = detect_cached(readable, aligner, cache, progress=settings.progress)
    counts = [FolderCount(str(folder), kind) for folder, kind in zip(folders, ("real photos", "new generator"))]
    usable = []
    for sample in samples:
        count = counts[sample.label]
        count.files += 1
        if sample.path in problems:
            count.unreadable.append((sample.path, problems[sample.path]))
        elif faces[sample.path] is None:
            count.unreadable.append((sample.path, _why_unreadable(sample.path)))
        elif not faces[sample.path]:
            count.no_face.append(sample.path)
        else:
            count.faces += 1
            usable.append(sample)
    for label, count in enumerate(counts):
        if count.faces < MIN_IMAGES_PER_CLASS:
            raise TrainingDataError(
                f"{count.folder}: need at least {MIN_IMAGES_PER_CLASS} usable {'real' if label == 0 else 'fake'} "
                f"images, found {count.faces} (of {count.files} image files; {len(count.unreadable)} unreadable, "
                f"{len(count.no_face)} without a face)"
            )
    train, calibration, held_report = _split(usable, settings.val_fraction, settings.seed)
    check = DataCheck(counts, train, calibration, held_report)
    warning = _too_few_reals(sum(s.label == 0 for s in calibration), settings, base_threshold)
    if warning:
        check.warnings.append(warning)
    return check


def _why_unreadable(path: str) -> str:
    try:
        load_image(path)
    except ImageLoadError as exc:
        return str(exc)
    return "could not be read when its faces were searched"


def _too_few_reals(n_real: int, settings: FinetuneSettings, base_threshold: float) -> Optional[str]:
    """The warning when the calibration share cannot place a threshold at 1% false positives (``None``: it
    can)."""
    if n_real >= settings.min_calibration_reals:
        return None
    share = settings.val_fraction / 2
    return (
        f"too few real photos to recalibrate: the calibration share holds {n_real} real photos; setting a "
        f"threshold at 1% false positives needs at least {settings.min_calibration_reals} (1 in 100 may be "
        f"flagged), so the base model's calibration and threshold ({base_threshold:.4f}) are kept (what "
        "the base model knew of real photos is kept too: by distillation for the CNN, by the base's statistics "
        "for the clip head). To refit them, give at least "
        f"{math.ceil(settings.min_calibration_reals / share)} real photos ({share:.0%} go to calibration)."
    )


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


def _compare(detectors: dict, samples: Sequence[Sample], threshold_note: str) -> tuple[dict, list[dict]]:
    """Metrics of the ``"before"`` and ``"after"`` detectors on ``samples``, and the ``"after"`` rows."""
    result: dict = {}
    for when, detector in detectors.items():
        rows = score_samples(detector, samples, FINETUNE_CONDITIONS, progress=False)
        labels = np.array([r["sample"].label for r in rows])
        result[when] = metrics(labels, row_likelihoods(rows), detector.threshold)
    result["note"] = threshold_note
    return result, rows


def finetune(
    real_dir: str | os.PathLike[str],
    fake_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    base: str | os.PathLike[str] | None = None,
    settings: Optional[FinetuneSettings] = None,
    base_validation: str | os.PathLike[str] | None = None,
    base_validation_max: int = 400,
    cache_dir: str | os.PathLike[str] | None = None,
    device: Optional[str] = None,
    resume: bool = False,
    on_checked: Optional[Callable[[DataCheck], None]] = None,
) -> FinetuneReport:
    """Fine-tune the base model (``None``: the shipped one) on a folder of real photos and one of the new
    generator's faces; write ``output`` (``.safetensors``) and its card (``.json``) and return the report.

    Unreadable files and files without a face are skipped and listed. ``on_checked(check)`` is called with the
    :class:`DataCheck` before any training (the command line prints it). ``base_validation``, a tree with
    ``real/`` and ``fake/``, measures what the base model knew, before and after (at most
    ``base_validation_max`` images, drawn evenly). ``cache_dir`` keeps face detections and crops for later
    runs; without it they go to ``<output>.partial/cache``, removed with the rest of that folder at the end.
    ``resume`` continues an interrupted run from its last finished epoch (its settings must be the same; a
    difference raises :class:`TrainingDataError` naming it); without it an unfinished run's folder is refused.
    """
    settings = settings or FinetuneSettings()
    output = Path(output).with_suffix(".safetensors")
    started = time.time()
    base_card = ModelCard.load(base)
    head, cnn = settings.steps(base_card)
    if base_card.face is None:
        raise TrainingDataError(f"{base_card.path}: the base model has no face CNN")
    if not (head or cnn):
        raise TrainingDataError(f"{base_card.path}: the base model has no clip view, so without --cnn there is "
                                "nothing to fine-tune")  # fmt: skip
    if settings.head_emphasis <= 0:
        raise TrainingDataError(f"--head-emphasis must be positive, got {settings.head_emphasis}")
    teacher = None
    if cnn:
        from .network import load_torch_cnn

        # refuses pickle payloads before any work is done; its weights also start the student
        teacher = load_torch_cnn(base_card)
    if head:  # checks the clip files against the card's sha256 before any work is done
        base_card.load_clip_state()
        if not cnn:  # the CNN is copied as it is: it must read as plain tensors (a pickle payload is refused)
            base_card.load_state_dict("cnn")
    samples, problems = _user_samples(real_dir, fake_dir)
    partial = partial_dir(output)
    run = _run_settings(real_dir, fake_dir, base_card, settings, base_validation, base_validation_max, samples)
    created = _open_partial(partial, run, resume)
    cache = Path(cache_dir) if cache_dir is not None else partial / "cache"
    aligner = FaceAligner(base_card.face_search)
    try:
        data = check_data(samples, problems, (real_dir, fake_dir), aligner, cache, settings, base_card.threshold)
    except TrainingDataError:
        if created:  # refused before anything worth keeping was done
            shutil.rmtree(partial, ignore_errors=True)
        raise
    data.steps = _describe_steps(data, base_card, settings)
    log.info("fine-tuning on %s", data.counts)
    if on_checked is not None:
        on_checked(data)
    report = _finish(data, base_card, teacher, output, settings, base_validation, base_validation_max, cache,
                     device, partial, started)  # fmt: skip
    shutil.rmtree(partial)  # the model is written: nothing left to resume
    return report


def _train(data: DataCheck, base_card: ModelCard, teacher: torch.nn.Module, aligner: FaceAligner, cache: Path,
           settings: FinetuneSettings, checkpoint_dir: Path):  # fmt: skip
    """The training step: crop pools, then the CNN from the base's weights with distillation on real photos,
    checkpointed after every epoch in ``checkpoint_dir`` (a rerun with the same settings resumes there)."""
    config = base_card.face.config
    train, calibration = data.train, data.calibration
    aug = Augmentation()
    train_pool = build_pool(
        train, cache, config, variants=settings.variants,
        make_variant=TrainVariants(aug, settings.seed, [s.label for s in train]),
        spec={"kind": "finetune-train", "seed": settings.seed, "aug": str(aug)}, aligner=aligner, workers=1,
    )  # fmt: skip
    val_pool = build_pool(
        calibration, cache, config, variants=len(FINETUNE_CONDITIONS),
        make_variant=ConditionVariants(FINETUNE_CONDITIONS), spec={"kind": "finetune-val"}, aligner=aligner,
        workers=1,
    )  # fmt: skip
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
        epochs=settings.epochs, samples_per_epoch=settings.samples_per_epoch, lr=settings.lr,
        warmup_steps=20, patience=settings.epochs, seed=settings.seed, pretrained=False,
        freeze=settings.freeze_blocks,
    )  # fmt: skip
    return train_cnn(
        train_pool, val_pool, config, train_settings, val_conditions=FINETUNE_CONDITIONS,
        init_state={k: v.float().clone() for k, v in teacher.state_dict().items()}, extra_loss=distill,
        checkpoint_dir=checkpoint_dir, progress=settings.progress,
    )  # fmt: skip


def _refit_head(data: DataCheck, base_card: ModelCard, aligner: FaceAligner, cache: Path,
                settings: FinetuneSettings, partial: Path, staged_head: Path) -> dict:  # fmt: skip
    """The head step: the user's training images' clip features (kept in ``partial``), added to the base head's
    statistics; the new head is written to ``staged_head``. Returns what was done (for the card)."""
    from safetensors.numpy import save_file

    started = time.time()
    features = user_features(data.train, base_card, aligner, cache, partial / CLIP_FEATURES,
                             workers=settings.workers, progress=settings.progress)  # fmt: skip
    seconds = time.time() - started
    _, base_head = base_card.load_clip_state()
    labels = np.array([s.label for s in data.train])
    tensors, info = refit_head(base_head, base_card, features, labels, settings.head_emphasis)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(staged_head),
              metadata={"what": "gan-face clip view head (shrunk LDA) and its sufficient statistics",
                        "base": base_card.name})  # fmt: skip
    os.chmod(staged_head, 0o644)
    return {**info, "conditions": list(HEAD_CONDITIONS), "feature_seconds": round(seconds, 1)}


def clip_head_path(output: Path) -> Path:
    """Where a fine-tuned model keeps its refitted clip head."""
    return output.with_name(output.stem + "-clip-head.safetensors")


def _finish(data: DataCheck, base_card: ModelCard, teacher: Optional[torch.nn.Module], output: Path,
            settings: FinetuneSettings, base_validation, base_validation_max: int, cache: Path, device,
            partial: Path, started: float) -> FinetuneReport:  # fmt: skip
    """Refit the head and/or train, calibrate, measure before/after and write the model."""
    from ..card import file_sha256
    from ..detector import Detector

    # the folder check's warnings (printed before any work) go into the card, not again into the final table
    report = FinetuneReport(output=str(output), base_threshold=base_card.threshold)
    report.skipped, report.counts = data.skipped, data.counts
    aligner = FaceAligner(base_card.face_search)
    head, cnn = settings.steps(base_card)
    calibration, held_report = data.calibration, data.held_report

    # everything is written under staging names and renamed at the very end: an interrupted run never leaves
    # an uncalibrated model under the name the user asked for
    staged_weights = output.with_name(output.stem + ".staging.safetensors")
    staged_head = output.with_name(output.stem + ".staging-clip-head.safetensors")
    head_info = None
    card = base_card
    if head:
        head_info = _refit_head(data, base_card, aligner, cache, settings, partial, staged_head)
        clip = dataclasses.replace(base_card.clip, head_path=staged_head, head_sha256=file_sha256(staged_head))
        card = card.replace(clip=clip)
        n = head_info["images"]
        report.refitted.append(
            f"the clip head, on the base's statistics plus {n['fake']} fake and {n['real']} real training images "
            f"x {head_info['variants']} variants (each class weighing {settings.head_emphasis:g} base sources; "
            f"features in {head_info['feature_seconds']:.0f} s)"
        )
    result = None
    if cnn:
        result = _train(data, base_card, teacher, aligner, cache, settings, partial / "checkpoint")
        save_weights(result.state_dict, staged_weights, {"format": "gan-face", "base": base_card.name})
        report.refitted.append(f"the face CNN (epochs: {settings.epochs}, best: {result.best_epoch + 1})")
    else:  # the base's CNN, bit for bit: a copy beside the model keeps it whole, as for the frame CNN
        shutil.copyfile(base_card.face.weights_path, staged_weights)
    card = card.with_weights(staged_weights).replace(
        name=output.stem,
        description=f"{base_card.name} fine-tuned on a new generator's faces ({output.stem}).",
        # the base's second look was fitted on the base's first look and its band: the refitted first look
        # would be judged by a fusion made for another, so the fine-tuned model has none
        second_look=None,
    )
    if base_card.second_look is not None:
        report.warnings.append(f"{base_card.name}'s second look is dropped: it was fitted for its first look")
    card_path = staged_weights.with_suffix(".json")
    card = card.save(card_path)
    changed = ["clip"] * head + ["cnn"] * cnn
    card = card.replace(**_calibrate(card_path, base_card, calibration, settings, report, changed)).save(card_path)
    report.threshold = card.threshold

    note = f"{report.calibration}; these metrics are on the report half, which neither step saw"
    # both models loaded once, for every comparison below
    detectors = {"before": Detector(base_card.path, device), "after": Detector(card_path, device)}
    report.before_after["new generator (held out)"], after_rows = _compare(detectors, held_report, note)
    # the expected FPR: the report half's real photos as avatars, already scored by the comparison
    real_avatars = [r for r in after_rows if r["sample"].label == 0 and r["condition"] == "avatar"]
    if real_avatars:
        flagged = int((row_likelihoods(real_avatars) >= card.threshold).sum())
        low, high = clopper_pearson(flagged, len(real_avatars))
        report.expected_fpr = {"flagged": flagged, "n_real": len(real_avatars),
                               "rate": flagged / len(real_avatars), "low": low, "high": high}  # fmt: skip
    if base_validation:
        base_samples = index_tree(base_validation)
        step = max(1, len(base_samples) // base_validation_max)
        report.before_after["base validation data"], _ = _compare(
            detectors, base_samples[::step], "the base model's held-out data"
        )
    report.minutes = round((time.time() - started) / 60, 2)
    finetune_section = {
        "base": base_card.name,
        "base_weights_sha256": base_card.face.sha256,
        "counts": report.counts,
        "skipped": [{"path": p, "reason": r} for p, r in report.skipped],
        "settings": {k: v for k, v in asdict(settings).items() if k != "workers"},
        "refitted": report.refitted,
        "clip_head": head_info,
        "best_epoch": None if result is None else result.best_epoch,
        "history": None if result is None else result.history,
        "threshold": {
            "value": report.threshold,
            "base": report.base_threshold,
            "how": report.calibration,
            "expected_fpr": report.expected_fpr,
        },  # fmt: skip
        "warnings": data.warnings + report.warnings,
        "minutes": report.minutes,
    }
    # the base model's measurements describe the base, not this model: they are replaced by this run's own
    evaluation = {"data": "the report half of the user's folders (never trained or calibrated on)",
                  "conditions": list(FINETUNE_CONDITIONS), "before_after": report.before_after}  # fmt: skip
    os.replace(staged_weights, output)
    if head:  # the encoder stays the base's, named and not copied (ClipNetwork finds it beside or shipped)
        os.replace(staged_head, clip_head_path(output))
        card = card.replace(clip=dataclasses.replace(card.clip, head_path=clip_head_path(output)))
    if card.frame is not None:  # the frame CNN is not fine-tuned; a copy beside the model keeps it whole
        frame_output = frame_weights_path(output)
        staged_frame = frame_output.with_name(frame_output.name + ".staging")
        shutil.copyfile(card.frame.weights_path, staged_frame)
        os.replace(staged_frame, frame_output)
        card = card.replace(frame=dataclasses.replace(card.frame, weights_path=frame_output))
    card.replace(face=dataclasses.replace(card.face, weights_path=output)).with_sections(
        finetune=finetune_section, evaluation=evaluation, ablation=None, fusion_fit=None
    ).save(output.with_suffix(".json"))
    card_path.unlink()
    return report


def frame_weights_path(output: Path) -> Path:
    """Where a fine-tuned model keeps its copy of the base model's frame CNN (the base's, unchanged)."""
    return output.with_name(output.stem + "-frame.safetensors")


def _calibrate(card_path: Path, base_card: ModelCard, calibration: Sequence[Sample],
               settings: FinetuneSettings, report: FinetuneReport, changed: Sequence[str]) -> dict:  # fmt: skip
    """The fusion and threshold of the fine-tuned model (as ``ModelCard`` fields), the terms of the ``changed``
    evidence refitted, saying what was done in ``report.calibration`` and ``report.warnings``."""
    from ..detector import Detector

    n_real = sum(s.label == 0 for s in calibration)
    if n_real < settings.min_calibration_reals:  # the folder check said why, once, before any work
        report.calibration = "the base model's calibration and threshold kept (too few real photos: see above)"
        return {"fusion": base_card.fusion, "threshold": base_card.threshold}
    rows = score_samples(Detector(card_path), calibration, FINETUNE_CONDITIONS, progress=False)
    fusion, threshold = refit_terms(base_card.fusion, changed, rows, max_fpr=0.01)
    names = " and ".join({"cnn": "the CNN's", "clip": "the clip view's"}.get(n, n) for n in changed)
    report.calibration = f"{names} calibration and the threshold refitted on {len(calibration)} held-out images"
    if threshold < base_card.threshold and not settings.allow_lower_threshold:
        report.warnings.append(
            f"the calibration share would set the threshold at {threshold:.4f}, below the base model's "
            f"{base_card.threshold:.4f}; the base model's is kept (allow_lower_threshold uses the lower one)"
        )
        threshold = base_card.threshold
    return {"fusion": fusion, "threshold": threshold}
