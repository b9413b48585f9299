"""The frozen results: what one check found (:class:`CheckResult`) and the verdict on one image
(:class:`Verdict`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Mapping, Optional

from .align import Face

#: A rectangle ``(x0, y0, x1, y1)`` in image pixels, with a label a report can print beside it.
Region = tuple[str, tuple[float, float, float, float]]

#: The learnt evidence (the CNNs) by name; every other piece of evidence is a handcrafted check.
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
    """What one check found: a score, a one-line explanation, the regions it looked at, raw measurements."""

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


Status = Literal["ok", "no_face", "multiple_faces", "low_quality"]
STATUSES: tuple[str, ...] = ("ok", "no_face", "multiple_faces", "low_quality")


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
    ``checks`` maps each evidence name (``"cnn"``, ``"frame"``, ``"eyes"``, ...) to its :class:`CheckResult`;
    ``contributions`` gives each one's share of the fused log-odds, for explaining a flag.
    """

    likelihood: Optional[float]
    threshold: float
    status: Status
    face: Optional[Face]
    checks: Mapping[str, CheckResult]
    contributions: Mapping[str, float] = field(default_factory=dict)
    image_size: tuple[int, int] = (0, 0)  # width, height of the loaded image

    def __post_init__(self) -> None:
        if self.likelihood is not None and not 0.0 <= self.likelihood <= 1.0:
            raise ValueError(f"likelihood {self.likelihood} outside [0, 1]")
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")
        object.__setattr__(self, "checks", MappingProxyType(dict(self.checks)))
        object.__setattr__(self, "contributions", MappingProxyType(dict(self.contributions)))

    @property
    def synthetic(self) -> bool:
        return self.likelihood is not None and self.likelihood >= self.threshold

    def __bool__(self) -> bool:
        return self.synthetic

    @property
    def decided_by(self) -> Optional[str]:
        """The evidence that pushed hardest towards the decision: ``"cnn"`` or ``"frame"`` (a learnt model,
        :data:`LEARNT_EVIDENCE`) or a handcrafted check's name; ``None`` when nothing was weighed."""
        if self.likelihood is None:
            return None
        weighed = {k: v for k, v in self.contributions.items() if k in self.checks}
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
            first = next(iter(self.checks.values()), None)
            return first.explanation if first else ""
        decider = f"the {evidence_label(name)}"
        if name in LEARNT_EVIDENCE:
            decider += ", not a handcrafted check"
        return f"{self.checks[name].explanation} Decided mainly by {decider}."

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict with every field (used by the JSONL and HTML reports)."""
        return {
            "likelihood": None if self.likelihood is None else round(self.likelihood, 6),
            "synthetic": self.synthetic,
            "threshold": round(self.threshold, 6),
            "status": self.status,
            "image_size": list(self.image_size),
            "face": None if self.face is None else self.face.to_dict(),
            "checks": {name: result.to_dict() for name, result in self.checks.items()},
            "contributions": {name: round(value, 4) for name, value in self.contributions.items()},
            "decided_by": self.decided_by,
            "reason": self.reason,
        }
