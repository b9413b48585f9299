"""The network view: what a folder of avatars from suspected coordinated accounts has in common.

Uncropped StyleGAN faces all put their eyes on the same pixels, so the mean image of a network's flagged avatars
shows two sharp eyes where a mean of real photos is a blur; many avatars share near-identical landmark
positions; a large share sits on the StyleGAN template. OSINT analysts use exactly this tell. The view keeps a
running sum of small images and, per distinct landmark position, a count and a few example names, never the
avatars themselves.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from PIL import Image, ImageDraw

from ..checks.eyes import TEMPLATE_MEAN
from ..result import Verdict

#: An eye-check score at or above this means "on the template within StyleGAN's own spread".
ON_TEMPLATE_SCORE = 0.01
#: Avatars whose two eyes lie within this fraction of the frame of a group's first member's join its group.
#: StyleGAN's own eye spread is 0.5% (sd), so its uncropped faces fall into one group; the mouth varies with the
#: expression (1.6%) and is left out of the match.
GROUP_TOLERANCE = 0.015
MIN_GROUP = 3
EXAMPLES_PER_GROUP = 12


@dataclass
class NetworkView:
    size: int = 128  # side of the mean images
    scanned: int = 0
    with_face: int = 0
    flagged: int = 0
    on_template: int = 0
    _sum_flagged: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    _sum_all: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    _leaders: list = field(default_factory=list, repr=False)  # per group: geometry of its first member
    _counts: list = field(default_factory=list, repr=False)
    _examples: list = field(default_factory=list, repr=False)
    _cells: dict = field(default_factory=lambda: defaultdict(list), repr=False)  # grid cell -> group ids

    def __post_init__(self) -> None:
        self._sum_flagged = np.zeros((self.size, self.size, 3), np.float64)
        self._sum_all = np.zeros((self.size, self.size, 3), np.float64)

    def add(self, path: str, verdict: Verdict, thumbnail: Optional[np.ndarray] = None) -> None:
        """Take one scored avatar: its verdict and, for the mean images, a small copy of it."""
        self.scanned += 1
        flagged = verdict.synthetic
        self.flagged += flagged
        if thumbnail is not None:
            small = np.asarray(
                Image.fromarray(thumbnail).resize((self.size, self.size), Image.BILINEAR), np.float64
            )
            self._sum_all += small
            if flagged:
                self._sum_flagged += small
        if verdict.face is None:
            return
        self.with_face += 1
        eyes = verdict.checks.get("eyes")
        self.on_template += eyes is not None and eyes.score is not None and eyes.score >= ON_TEMPLATE_SCORE
        lm = verdict.face.landmarks
        width, height = verdict.image_size
        geometry = (np.array([lm.left_eye, lm.right_eye], np.float64) / [width, height]).ravel()
        group = self._find_group(geometry)
        if group is None:
            group = len(self._leaders)
            self._leaders.append(geometry)
            self._counts.append(0)
            self._examples.append([])
            self._cells[self._cell(geometry)].append(group)
        self._counts[group] += 1
        if len(self._examples[group]) < EXAMPLES_PER_GROUP:
            self._examples[group].append(path)

    @staticmethod
    def _cell(geometry: np.ndarray) -> tuple[int, ...]:
        return tuple(int(math.floor(v / GROUP_TOLERANCE)) for v in geometry)

    def _find_group(self, geometry: np.ndarray) -> Optional[int]:
        """The group whose first member has both eyes within the tolerance of this one's (leader clustering on a
        grid: only the 81 neighbouring cells are searched)."""
        centre = self._cell(geometry)
        for offset in itertools.product((-1, 0, 1), repeat=4):
            for group in self._cells.get(tuple(c + o for c, o in zip(centre, offset)), ()):
                if np.abs(self._leaders[group] - geometry).max() <= GROUP_TOLERANCE:
                    return group
        return None

    def mean_image(self, flagged_only: bool = True) -> Optional[np.ndarray]:
        count = self.flagged if flagged_only else self.scanned
        total = self._sum_flagged if flagged_only else self._sum_all
        if count == 0 or not total.any():
            return None
        return np.clip(total / count, 0, 255).astype(np.uint8)

    def save_mean_faces(self, path: str) -> bool:
        """Save the mean of the flagged avatars beside the mean of all, template marked; False if nothing to
        show."""
        means = [m for m in (self.mean_image(True), self.mean_image(False)) if m is not None]
        if not means:
            return False
        Image.fromarray(np.concatenate([draw_template(m) for m in means], axis=1)).save(path)
        return True

    def groups(self) -> list[dict[str, Any]]:
        """Sets of at least three avatars whose eyes sit within 1.5% of the frame of a common first member's."""
        result = []
        for group in sorted(range(len(self._counts)), key=lambda g: -self._counts[g]):
            count = self._counts[group]
            if count < MIN_GROUP:
                break
            centre = self._leaders[group]
            result.append(
                {
                    "count": count,
                    "left_eye": [round(float(centre[0]), 3), round(float(centre[1]), 3)],
                    "right_eye": [round(float(centre[2]), 3), round(float(centre[3]), 3)],
                    "on_template": bool(np.abs(centre - TEMPLATE_MEAN[:4]).max() < GROUP_TOLERANCE),
                    "examples": list(self._examples[group]),
                }
            )
        return result[:10]

    def summary(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned,
            "with_face": self.with_face,
            "flagged": self.flagged,
            "on_template": self.on_template,
            "on_template_share": self.on_template / self.with_face if self.with_face else 0.0,
            "groups": self.groups(),
        }

    def text(self) -> str:
        s = self.summary()
        lines = [
            f"network view: {s['scanned']} avatars scanned, {s['flagged']} flagged, {s['with_face']} with a face",
            f"  eyes on the StyleGAN template: {s['on_template']} of {s['with_face']} "
            f"({s['on_template_share']:.1%})"
            + ("  <- a coordinated GAN network stacks here" if s["on_template_share"] > 0.2 else ""),
        ]
        for i, group in enumerate(s["groups"], 1):
            lines.append(
                f"  group {i}: {group['count']} avatars with near-identical eye positions "
                f"(at {group['left_eye']}, "
                f"{group['right_eye']}{', the StyleGAN template' if group['on_template'] else ''}), e.g. "
                + ", ".join(group["examples"][:3])
            )
        if not s["groups"]:
            lines.append("  no group of 3 or more avatars shares landmark positions")
        return "\n".join(lines)


def draw_template(image: np.ndarray) -> np.ndarray:
    """``image`` with the StyleGAN template's eye and mouth positions marked (for the mean image)."""
    pil = Image.fromarray(image).convert("RGB")
    pen = ImageDraw.Draw(pil)
    width, height = pil.size
    r = max(3, width // 40)
    for x, y in TEMPLATE_MEAN.reshape(3, 2) * [width, height]:
        pen.ellipse((x - r, y - r, x + r, y + r), outline=(0, 220, 255), width=max(1, width // 128))
    return np.asarray(pil)
