"""The frozen results: what one piece of evidence found (:class:`CheckResult`: a handcrafted check's or a learnt
view's finding) and the verdict on one image (:class:`Verdict`), with everything a verdict knows about itself
(its reason, the evidence it weighed, the checks it skipped)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from ._math import sigmoid
from .align import STATUSES, Face, Status

#: A rectangle ``(x0, y0, x1, y1)`` in image pixels, with a label a report can print beside it.
Region = tuple[str, tuple[float, float, float, float]]

#: The learnt evidence (the learnt views: two CNNs and the CLIP view) by name; every other piece of evidence is a
#: handcrafted check.
LEARNT_EVIDENCE = {
    "cnn": "neural network on the face",
    "frame": "neural network on the whole frame",
    "clip": "CLIP view of the whole picture",
    "second_look": "CLIP view of the whole picture, a closer second look near the threshold",
}


#: The three answers of a verdict, in words (:attr:`Verdict.answer`): at or above the threshold, in the band below
#: it where real and generated photos mix (fitted on calibration data, stored in the model card), or below that.
LIKELY_GENERATED, CANT_TELL, LIKELY_CAMERA = "likely generated", "can't tell", "likely a camera photo"
ANSWERS = (LIKELY_GENERATED, CANT_TELL, LIKELY_CAMERA)

#: How each piece of weighed evidence reads in a reason: what it found when it points to a generator, and when it
#: points to a camera photo. Plain words about what a person can look at; no model names (the JSON report keeps
#: the technical fields: scores, contributions, ``decided_by``).
PLAIN_WORDS = {
    "clip": (
        "the picture as a whole has the look of a generated image (its finish, light and backdrop)",
        "the picture as a whole looks like a camera photo",
    ),
    "second_look": (
        "a closer look at the whole picture (more of its pixels) finds the look of a generated image",
        "a closer look at the whole picture (more of its pixels) finds a camera photo",
    ),
    "cnn": (
        "the face's skin, eyes, teeth and hair have the texture of generated faces",
        "the face's skin, eyes and hair have a camera photo's texture",
    ),
    "frame": (
        "the whole frame (background, hair, clothes) looks generated",
        "the whole frame (background, hair, clothes) looks like a camera photo's",
    ),
    "eyes": (
        "the eyes sit on the exact spots where StyleGAN puts every face's eyes (the cyan rings)",
        "the eyes are not where StyleGAN puts them",
    ),
}
#: A second piece of evidence is cited beside the first only if its pull (log-odds) is at least this, and at
#: least a quarter of the first's: a reason names what moved the likelihood, not every nudge.
CITED_PULL = 0.5


def plain_words(name: str, towards_generated: bool) -> str:
    """What ``name`` found, in a reason's words, pointing towards a generator or towards a camera photo."""
    default = (f"the {name} check points to a generator", f"the {name} check points to a camera photo")
    generated, camera = PLAIN_WORDS.get(name, default)
    return generated if towards_generated else camera


def _percent(p: float) -> str:
    if p >= 0.995:
        return "over 99%" if p < 1.0 else "100%"
    return "under 1%" if p < 0.005 else f"{p:.0%}"


def _percents_below(p: float, threshold: float) -> tuple[str, str]:
    """``p`` and the threshold above it as percentages, with as many decimals as it takes to show the gap."""
    for digits in range(1, 5):
        if round(100 * p, digits) < round(100 * threshold, digits):
            break
    return f"{p:.{digits}%}", f"{threshold:.{digits}%}"


def _cited(pulls: list[tuple[str, float]]) -> list[str]:
    """The names among ``pulls`` ((name, pull > 0), strongest first) that a reason cites: the strongest, and the
    next if it pulls enough beside it."""
    if not pulls:
        return []
    first = pulls[0][1]
    return [pulls[0][0]] + [name for name, pull in pulls[1:2] if pull >= CITED_PULL and pull >= first / 4]


@dataclass(frozen=True)
class CheckResult:
    """What one piece of evidence found (a handcrafted check or a learnt view): a score, a one-line explanation,
    the regions it looked at, raw measurements."""

    name: str
    score: Optional[float]
    explanation: str
    regions: tuple[Region, ...] = ()
    details: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if self.score is not None and not (math.isfinite(self.score) and 0.0 <= self.score <= 1.0):
            raise ValueError(f"check {self.name!r}: score {self.score} outside [0, 1]")
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    def to_dict(self) -> dict[str, object]:
        return {
            "score": None if self.score is None else round(self.score, 6),
            "explanation": self.explanation,
            "regions": [{"label": label, "box": [round(v, 1) for v in box]} for label, box in self.regions],
            "details": {k: round(float(v), 6) for k, v in self.details.items()},
        }


@dataclass(frozen=True)
class NotComputed(CheckResult):
    """A check that was not run for this image: it carries no weight in the likelihood, and with
    ``explain="auto"`` (``gan-face scan``'s default) the checks that only explain are run for flagged images and
    those near the threshold. Its score is ``None``; reports list it under ``not_computed``."""

    @classmethod
    def of(cls, name: str) -> "NotComputed":
        return cls(
            name,
            None,
            "Not computed: this check carries no weight in the likelihood and the image is well below the "
            "threshold.",
        )


def learnt_evidence(
    name: str,
    faces: Sequence[Optional[Face]],
    face_logits: np.ndarray,
    explain: Callable[[float], str],
    no_face: str,
) -> list[CheckResult]:
    """A learnt view's evidence per image from the logits of the images that have a face (in order): its
    probability, explanation and logit, or ``score=None`` with ``no_face`` where there was nothing to judge."""
    logits = iter(face_logits)
    results = []
    for face in faces:
        if face is None:
            results.append(CheckResult(name, None, no_face))
            continue
        logit = float(next(logits))
        probability = sigmoid(logit)
        results.append(CheckResult(name, probability, explain(probability), (), {"logit": logit}))
    return results


@dataclass(frozen=True)
class Verdict:
    """How likely a generator (a GAN, a diffusion model) made this face, the decision at ``threshold``, the answer
    in words, and the evidence.

    ``likelihood`` is a calibrated probability at even prior odds: among images scoring 0.9, nine in ten were
    generated in validation data holding as many generated faces as real photos. On a platform where generated
    faces are rare, a flag is less certain than that (see the README). ``synthetic`` is
    ``likelihood >= threshold``; ``bool(verdict)`` is ``synthetic``. ``answer`` says it in words: "likely
    generated" (flagged), "can't tell" (from ``cant_tell_from`` up to the threshold, where real and generated
    photos mix; and when there is no likelihood) or "likely a camera photo".

    ``likelihood`` is ``None`` when none of the evidence the model weighs could be measured (with the shipped
    model: no face was found); such an image is never flagged and ``reason`` says why.

    ``status`` is ``"ok"``, ``"no_face"`` (the likelihood, if any, rests on the whole-frame checks only),
    ``"multiple_faces"`` (the largest face was judged) or ``"low_quality"`` (face too small or unsure).
    ``evidence`` maps each piece of evidence by name to its :class:`CheckResult`: the learnt views (``"cnn"``,
    ``"frame"``, ``"clip"``) first, then the handcrafted checks (``"eyes"``, ``"symmetry"``, ...), both those
    the likelihood is made of and those that only explain it; ``contributions`` gives each weighed one's share
    of the fused log-odds, for explaining a flag. ``checks`` is the old name of ``evidence``, kept read-only for
    one release.
    """

    likelihood: Optional[float]
    threshold: float
    status: Status
    face: Optional[Face]
    evidence: Mapping[str, CheckResult]
    contributions: Mapping[str, float] = field(default_factory=dict)
    image_size: tuple[int, int] = (0, 0)  # width, height of the loaded image
    cant_tell_from: Optional[float] = None  # the "can't tell" band's lower edge (None: no band)

    def __post_init__(self) -> None:
        if self.likelihood is not None and not 0.0 <= self.likelihood <= 1.0:
            raise ValueError(f"likelihood {self.likelihood} outside [0, 1]")
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")
        object.__setattr__(self, "evidence", MappingProxyType(dict(self.evidence)))
        object.__setattr__(self, "contributions", MappingProxyType(dict(self.contributions)))

    @property
    def synthetic(self) -> bool:
        return self.likelihood is not None and self.likelihood >= self.threshold

    def __bool__(self) -> bool:
        return self.synthetic

    @property
    def checks(self) -> Mapping[str, CheckResult]:
        """The old name of :attr:`evidence` (before 0.2), kept read-only for one release."""
        return self.evidence

    @property
    def not_computed(self) -> list[str]:
        """The names of the checks that were not computed for this image (``explain="auto"``)."""
        return [name for name, result in self.evidence.items() if isinstance(result, NotComputed)]

    @property
    def answer(self) -> str:
        """The verdict in words: :data:`LIKELY_GENERATED`, :data:`CANT_TELL` or :data:`LIKELY_CAMERA`."""
        if self.likelihood is None:
            return CANT_TELL
        if self.synthetic:
            return LIKELY_GENERATED
        edge = self.cant_tell_from
        if edge is not None and self.likelihood >= min(edge, self.threshold):
            return CANT_TELL
        return LIKELY_CAMERA

    def _pulls(self, towards_generated: bool) -> list[tuple[str, float]]:
        """The weighed evidence that pulled the likelihood one way, strongest first: (name, pull in log-odds)."""
        sign = 1.0 if towards_generated else -1.0
        pulls = [(k, sign * v) for k, v in self.contributions.items() if k in self.evidence and sign * v > 0]
        return sorted(pulls, key=lambda item: -item[1])

    @property
    def leading_evidence(self) -> tuple[str, ...]:
        """The weighed evidence the reason cites first, strongest first, each pulling towards the answer: towards a
        generator for "likely generated" and "can't tell" (what raised it), towards a camera photo for "likely a
        camera photo". Empty when nothing pulled that way."""
        if self.likelihood is None:
            return ()
        return tuple(_cited(self._pulls(self.answer != LIKELY_CAMERA)))

    @property
    def decided_by(self) -> Optional[str]:
        """The weighed evidence that pushed hardest towards the decision (flagged or not): ``"cnn"``,
        ``"frame"`` or ``"clip"`` (a learnt view, :data:`LEARNT_EVIDENCE`) or a handcrafted check's name;
        ``None`` when nothing was weighed or nothing pushed that way."""
        if self.likelihood is None:
            return None
        pulls = self._pulls(self.synthetic)
        return pulls[0][0] if pulls else None

    @property
    def observations(self) -> list[str]:
        """The explaining checks (computed, no weight in the likelihood) whose finding points to a generator:
        leads to check by eye, cited in the reason only when the answer is not "likely a camera photo"."""
        return [
            name
            for name, result in self.evidence.items()
            if name not in self.contributions and result.score is not None and result.score >= 0.5
        ]

    @property
    def reason(self) -> str:
        """The answer in a sentence or two, in words a journalist uses: the answer and the likelihood, the
        evidence that moved the likelihood towards that answer (never a piece that pointed the other way), for
        "can't tell" what raised it and what held it down, and one lead to check by eye when an explaining check
        agrees. The ``reason`` of every report row (scan, serve, the HTML page)."""
        if self.likelihood is None:
            found = "No face found: " if self.status == "no_face" else ""
            return f"{found}nothing the model weighs could be measured, so no likelihood is given (not flagged)."
        answer, p = self.answer, self.likelihood
        raised = " and ".join(plain_words(n, True) for n in _cited(self._pulls(True)))
        held = " and ".join(plain_words(n, False) for n in _cited(self._pulls(False)))
        if answer == LIKELY_GENERATED:
            text = f"Likely generated ({_percent(p)}): {raised or 'the evidence together points to a generator'}."
        elif answer == LIKELY_CAMERA:
            text = (
                f"Likely a camera photo ({_percent(p)} generated-like): {held or 'nothing points to a generator'}."
            )
        else:
            shown, needed = _percents_below(p, self.threshold)
            text = f"Can't tell ({shown}, below the {needed} needed to flag): "
            text += f"{raised} raised it" if raised else "no piece of evidence stands out"
            text += f", while {held} held it down." if held else "."
        leads = self.observations if answer != LIKELY_CAMERA else []
        if leads:
            text += f" To check by eye (not weighed): {self.evidence[leads[0]].explanation}"
        return text

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict with every field (used by the JSONL and HTML reports)."""
        return {
            "likelihood": None if self.likelihood is None else round(self.likelihood, 6),
            "synthetic": self.synthetic,
            "threshold": round(self.threshold, 6),
            "status": self.status,
            "image_size": list(self.image_size),
            "face": None if self.face is None else self.face.to_dict(),
            # "checks" is the report schema's key for the evidence (stable: scripts read it)
            "checks": {name: result.to_dict() for name, result in self.evidence.items()},
            "contributions": {name: round(value, 4) for name, value in self.contributions.items()},
            "decided_by": self.decided_by,
            "answer": self.answer,
            "reason": self.reason,
        }
