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
}


def evidence_label(name: str) -> str:
    """How reports name a piece of evidence, saying whether it is learnt or handcrafted."""
    return f"{LEARNT_EVIDENCE[name]} (learnt)" if name in LEARNT_EVIDENCE else f"{name} check (handcrafted)"


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
    """How likely a GAN made this face, the decision at ``threshold``, and the evidence.

    ``likelihood`` is a calibrated probability at even prior odds: among images scoring 0.9, nine in ten were
    GAN faces in validation data holding as many GAN faces as real photos. On a platform where GAN faces are
    rare, a flag is less certain than that (see the README). ``synthetic`` is ``likelihood >= threshold``;
    ``bool(verdict)`` is ``synthetic``.

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
    def decided_by(self) -> Optional[str]:
        """The evidence that pushed hardest towards the decision: ``"cnn"``, ``"frame"`` or ``"clip"`` (a learnt
        view, :data:`LEARNT_EVIDENCE`) or a handcrafted check's name; ``None`` when nothing was weighed."""
        if self.likelihood is None:
            return None
        weighed = {k: v for k, v in self.contributions.items() if k in self.evidence}
        if not weighed:
            return None
        sign = 1.0 if self.synthetic else -1.0
        return max(weighed, key=lambda k: sign * weighed[k])

    @property
    def reason(self) -> str:
        """The verdict in one sentence: the explanation of the evidence that pushed hardest towards the decision,
        and whether that was a learnt model (a CNN) or a handcrafted check, since a flag carried by a CNN alone is
        harder to defend. The ``reason`` of every report row (scan, serve, the HTML page) is this sentence."""
        if self.likelihood is None:
            found = "No face found: " if self.status == "no_face" else ""
            return f"{found}nothing the model weighs could be measured, so no likelihood is given (not flagged)."
        name = self.decided_by
        if name is None:
            first = next(iter(self.evidence.values()), None)
            return first.explanation if first else ""
        decider = f"the {evidence_label(name)}"
        if name in LEARNT_EVIDENCE:
            decider += ", not a handcrafted check"
        return f"{self.evidence[name].explanation} Decided mainly by {decider}."

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
            "reason": self.reason,
        }
