"""The network view: what a folder of avatars from suspected coordinated accounts has in common.

Uncropped StyleGAN faces all put their eyes on the same pixels, so the mean image of a network's flagged avatars
shows two sharp eyes where a mean of real photos is a blur; many avatars share near-identical landmark
positions; a large share sits on the StyleGAN template. OSINT analysts use exactly this tell. The view keeps a
running sum of small images and, per distinct landmark position, the names of its flagged avatars and of the
others, never the avatars themselves.

Shared eye positions alone are not evidence: real photos from one source share a framing too (a folder of aligned
CelebA photos forms groups of dozens). So a *possible network* is the flagged avatars of a group, when it holds at
least :data:`NETWORK_MIN_FLAGGED` of them; the avatars of the group that are not flagged are listed apart ("same
framing, not flagged") and are never shown as a network's members or examples. The other groups are reported as
shared framing, with their flagged avatar (if one) named on its own.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..checks.eyes import TEMPLATE_MEAN
from ..result import Verdict

#: An eye-check score at or above this means "on the template within StyleGAN's own spread".
ON_TEMPLATE_SCORE = 0.01
#: Avatars whose two eyes lie within this fraction of the frame of a group's first member's join its group.
#: StyleGAN's own eye spread is 0.5% (sd), so its uncropped faces fall into one group; the mouth varies with the
#: expression (1.6%) and is left out of the match.
GROUP_TOLERANCE = 0.015
MIN_GROUP = 3
#: A group is a possible network when at least this many of its avatars are flagged: one flagged avatar among
#: real photos framed alike is one flag, not a network.
NETWORK_MIN_FLAGGED = 2
MAX_GROUPS = 10


@dataclass
class AccountNetworkView:
    size: int = 128  # side of the mean images
    scanned: int = 0
    with_face: int = 0
    flagged: int = 0
    on_template: int = 0
    on_template_flagged: int = 0
    without_landmarks: int = 0  # rows kept from an interrupted CSV scan: counted, but no landmarks to group
    _sum_flagged: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    _sum_all: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    _n_images: list = field(default_factory=lambda: [0, 0], repr=False)  # thumbnails summed: all, flagged
    _leaders: list = field(default_factory=list, repr=False)  # per group: geometry of its first member
    _counts: list = field(default_factory=list, repr=False)
    _flagged_members: list = field(default_factory=list, repr=False)  # per group: names of its flagged avatars
    _other_members: list = field(default_factory=list, repr=False)  # per group: names of the others
    _cells: dict = field(default_factory=lambda: defaultdict(list), repr=False)  # grid cell -> group ids

    def __post_init__(self) -> None:
        self._sum_flagged = np.zeros((self.size, self.size, 3), np.float64)
        self._sum_all = np.zeros((self.size, self.size, 3), np.float64)

    def add(self, path: str, verdict: Verdict, thumbnail: Optional[np.ndarray] = None) -> None:
        """Take one scored avatar: its verdict and, for the mean images, a small copy of it."""
        eyes = verdict.evidence.get("eyes")
        landmarks = None
        if verdict.face is not None:
            landmarks = (verdict.face.landmarks.left_eye, verdict.face.landmarks.right_eye)
        on_template = eyes is not None and eyes.score is not None and eyes.score >= ON_TEMPLATE_SCORE
        self._add(path, verdict.synthetic, on_template, landmarks, verdict.image_size, thumbnail)

    def add_row(self, row: dict[str, Any], thumbnail: Optional[np.ndarray] = None) -> None:
        """Take one row of a report (a row kept from an interrupted scan): what it holds of the verdict. A CSV
        row holds no landmarks: it is counted, not grouped."""
        face, size = row.get("face"), row.get("image_size")
        eyes = row.get("check_eyes")
        on_template = eyes not in (None, "") and float(eyes) >= ON_TEMPLATE_SCORE
        flagged = row.get("synthetic") in (True, "true")
        if "face" not in row and row.get("status") != "no_face":
            self.without_landmarks += 1  # a CSV row: its face was found, but the row does not say where
        landmarks = None
        if face is not None and size:
            landmarks = (face["landmarks"]["left_eye"], face["landmarks"]["right_eye"])
        self._add(str(row["path"]), flagged, on_template, landmarks, tuple(size or (1, 1)), thumbnail)

    def _add(self, path: str, flagged: bool, on_template: bool, eyes, size, thumbnail) -> None:
        self.scanned += 1
        self.flagged += flagged
        if thumbnail is not None:
            small = np.asarray(
                Image.fromarray(thumbnail).resize((self.size, self.size), Image.BILINEAR), np.float64
            )
            self._sum_all += small
            self._n_images[0] += 1
            if flagged:
                self._sum_flagged += small
                self._n_images[1] += 1
        if eyes is None:
            return
        self.with_face += 1
        self.on_template += on_template
        self.on_template_flagged += on_template and flagged
        width, height = size
        geometry = (np.array(eyes, np.float64) / [width, height]).ravel()
        group = self._find_group(geometry)
        if group is None:
            group = len(self._leaders)
            self._leaders.append(geometry)
            self._counts.append(0)
            self._flagged_members.append([])
            self._other_members.append([])
            self._cells[self._cell(geometry)].append(group)
        self._counts[group] += 1
        (self._flagged_members if flagged else self._other_members)[group].append(path)

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
        # over the avatars whose thumbnail was summed: rows kept from an interrupted JSONL or CSV scan have none
        count = self._n_images[1] if flagged_only else self._n_images[0]
        total = self._sum_flagged if flagged_only else self._sum_all
        if count == 0 or not total.any():
            return None
        return np.clip(total / count, 0, 255).astype(np.uint8)

    def mean_images(self) -> list[tuple[str, np.ndarray]]:
        """The mean of the flagged avatars and the mean of all, each with its caption (counts included); the
        StyleGAN template is not drawn yet."""
        captions = (
            (True, f"mean of the {self._n_images[1]} flagged avatars"),
            (False, f"mean of all {self._n_images[0]} avatars"),
        )
        return [(caption, mean) for flagged, caption in captions if (mean := self.mean_image(flagged)) is not None]

    def save_mean_faces(self, path: str) -> bool:
        """Save the mean of the flagged avatars beside the mean of all, template marked, with a title, a caption
        under each and a legend; False if nothing to show."""
        means = self.mean_images()
        if not means:
            return False
        labelled_means(means).save(path)
        return True

    def groups(self) -> list[dict[str, Any]]:
        """Sets of at least three avatars whose eyes sit within 1.5% of the frame of a common first member's.

        A group with at least ``NETWORK_MIN_FLAGGED`` flagged avatars holds a *possible network*: its flagged
        avatars, every one listed (``members``). The group's avatars that are not flagged are listed apart
        (``same_framing_not_flagged``), never as a network's members: real photos framed alike share eye
        positions too. Possible networks first, most flagged first, then the groups that only share a framing,
        largest first; at most ``MAX_GROUPS``."""
        sizeable = [g for g in range(len(self._counts)) if self._counts[g] >= MIN_GROUP]

        def order(group: int) -> tuple[int, int]:
            flagged = len(self._flagged_members[group])
            network = flagged >= NETWORK_MIN_FLAGGED
            return (0, -flagged) if network else (1, -self._counts[group])

        sizeable.sort(key=order)
        result = []
        for group in sizeable[:MAX_GROUPS]:
            centre = self._leaders[group]
            flagged = list(self._flagged_members[group])
            result.append(
                {
                    "count": self._counts[group],
                    "flagged": len(flagged),
                    "possible_network": len(flagged) >= NETWORK_MIN_FLAGGED,
                    "left_eye": [round(float(centre[0]), 3), round(float(centre[1]), 3)],
                    "right_eye": [round(float(centre[2]), 3), round(float(centre[3]), 3)],
                    "on_template": bool(np.abs(centre - TEMPLATE_MEAN[:4]).max() < GROUP_TOLERANCE),
                    "members": flagged,  # the flagged avatars only: a network is never shown with real photos
                    "same_framing_not_flagged": list(self._other_members[group]),
                }
            )
        return result

    def summary(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned,
            "with_face": self.with_face,
            "flagged": self.flagged,
            "on_template": self.on_template,
            "on_template_flagged": self.on_template_flagged,
            "network_min_flagged": NETWORK_MIN_FLAGGED,
            "on_template_share": self.on_template / self.with_face if self.with_face else 0.0,
            "without_landmarks": self.without_landmarks,
            "groups": self.groups(),
        }

    def text(self) -> str:
        s = self.summary()
        stacked = s["on_template_share"] > 0.2 and s["on_template_flagged"] >= NETWORK_MIN_FLAGGED
        lines = [
            f"network view: {s['scanned']} avatars, {s['flagged']} flagged, {s['with_face']} with a face",
            f"  eyes on the StyleGAN template: {s['on_template']} of {s['with_face']} "
            f"({s['on_template_share']:.1%}), {s['on_template_flagged']} of them flagged"
            + ("  <- a coordinated GAN network stacks here" if stacked else ""),
            f"  a possible network is {NETWORK_MIN_FLAGGED} or more flagged avatars whose eyes sit on one spot; "
            "the avatars framed alike but not flagged are never part of it: real photos aligned or cropped by one "
            "tool share eye positions too",
        ]
        for i, group in enumerate(s["groups"], 1):
            where = f"eyes at {group['left_eye']}, {group['right_eye']}" + (
                ", the StyleGAN template" if group["on_template"] else ""
            )
            others = group["same_framing_not_flagged"]
            if group["possible_network"]:
                lines.append(f"  group {i}: possible network of {group['flagged']} flagged avatars ({where}):")
                lines.append("    members: " + ", ".join(group["members"]))
                if others:
                    lines.append(f"    same framing, not flagged (not part of the network): {len(others)} avatars")
            else:
                flagged = (
                    f"; flagged, alone (not a network): {', '.join(group['members'])}" if group["members"] else ""
                )
                lines.append(
                    f"  group {i}: shared framing, not a network: {group['count']} avatars ({where}){flagged}"
                )
        if not s["groups"]:
            lines.append("  no group of 3 or more avatars shares landmark positions")
        if s["without_landmarks"]:
            lines.append(
                f"  {s['without_landmarks']} avatars kept from the interrupted run are counted but not grouped "
                "(a CSV report holds no landmarks; a JSONL or HTML one does)"
            )
        return "\n".join(lines)


#: Side of each mean face in the saved picture, and the picture's text.
PANEL_SIDE = 256
MEANS_TITLE = "gan-face network view: mean faces"
MEANS_LEGEND = (
    "Cyan rings: where uncropped StyleGAN faces put the eyes and the mouth.",
    "Sharp eyes inside the rings: faces stacked on the StyleGAN template.",
    "A blur: photos framed one by one, as real profile photos are.",
)


def labelled_means(means: list[tuple[str, np.ndarray]]) -> Image.Image:
    """The mean faces side by side, template drawn, under a title, each over its caption, and the legend (what
    the rings mean) below: the picture reads without the report beside it."""
    font = _font(15)
    line = 22
    margin = 10
    width = max(len(means) * (PANEL_SIDE + margin) + margin, 560)
    height = margin + line + PANEL_SIDE + line + margin + line * len(MEANS_LEGEND) + margin
    canvas = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(canvas)
    pen.text((margin, margin), MEANS_TITLE, fill="black", font=_font(18))
    top = margin + line + 4
    for i, (caption, mean) in enumerate(means):
        left = margin + i * (PANEL_SIDE + margin)
        panel = Image.fromarray(mean).resize((PANEL_SIDE, PANEL_SIDE), Image.BILINEAR)
        canvas.paste(Image.fromarray(draw_template(np.asarray(panel))), (left, top))
        pen.text((left, top + PANEL_SIDE + 4), caption, fill="black", font=font)
    for j, text in enumerate(MEANS_LEGEND):
        pen.text((margin, top + PANEL_SIDE + line + margin + j * line), text, fill=(60, 60, 60), font=font)
    return canvas


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except TypeError:  # older Pillow: its small bitmap font
        return ImageFont.load_default()


def draw_template(image: np.ndarray) -> np.ndarray:
    """``image`` with the StyleGAN template's eye and mouth positions marked (for the mean image)."""
    pil = Image.fromarray(image).convert("RGB")
    pen = ImageDraw.Draw(pil)
    width, height = pil.size
    r = max(3, width // 40)
    for x, y in TEMPLATE_MEAN.reshape(3, 2) * [width, height]:
        pen.ellipse((x - r, y - r, x + r, y + r), outline=(0, 220, 255), width=max(1, width // 128))
    return np.asarray(pil)
