"""The HTML report: one self-contained page (no network access) for a person who is not an ML specialist.

Flagged images first; each with a thumbnail on which the landmarks (dots) and the StyleGAN eye template (rings)
are drawn, its likelihood, status and every check's score and explanation; sortable and filterable in the
browser; the network view on top. Thumbnails are embedded as base64 JPEG. The page's markup is the Jinja
template ``templates/report.html.j2`` (autoescaped); each card is the macro in ``templates/_cards.html.j2``, which
the serve page (``serve.py``) renders too.

The page is rendered at the end of a scan from the JSON-lines rows written during it (the ``.partial`` file),
holding in memory only each row's likelihood and file offset, so its size, not the scan's, bounds memory. The
network view is the one the scan built from its verdicts.
"""

from __future__ import annotations

import base64
import io
import json
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from PIL import Image

from ..checks.eyes import TEMPLATE_MEAN
from ..result import CANT_TELL
from .account_network import AccountNetworkView, draw_template

THUMBNAIL_SIDE = 224


def make_thumbnail(image: np.ndarray, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """A copy of ``image`` whose longer side is at most ``side`` (for the report and the network view)."""
    pil = Image.fromarray(image)
    pil.thumbnail((side, side), Image.BILINEAR)
    return np.asarray(pil)


def jpeg_b64(image: np.ndarray, quality: int = 82) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def png_b64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@lru_cache(maxsize=1)
def environment():
    """The Jinja environment of the pages in ``templates/`` (the report and the serve page), autoescaped."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("gan_face.outputs", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.globals["template_eyes"] = lambda w, h: (TEMPLATE_MEAN.reshape(3, 2)[:2] * [w, h]).tolist()
    return environment


def thumbnail_of(row: dict) -> Optional[np.ndarray]:
    """The thumbnail an HTML report's row carries (base64 JPEG), decoded; ``None`` for other rows."""
    encoded = row.get("thumbnail")
    if not encoded:
        return None
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB"))


def card_row(row: dict, evidence_names: Sequence[str]) -> dict:
    """``row`` (a report row, with its ``thumbnail`` when it has one) with every key a card reads filled in."""
    row.setdefault("thumbnail", None)
    row.setdefault("error", None)
    row.setdefault("face", None)
    row.setdefault("explanations", {})
    row.setdefault("image_size", None)
    row.setdefault("reason", "")
    row.setdefault("decided_by", None)
    row.setdefault("verdict", None)
    row.setdefault("weighed", None)
    row.setdefault("not_computed", "")
    for name in evidence_names:
        row.setdefault(f"check_{name}", None)
    return row


def render_card(row: dict, index: int, evidence_names: Sequence[str]) -> str:
    """One verdict card as the report shows it (the serve page adds them one by one)."""
    cards = environment().get_template("_cards.html.j2").module
    return str(cards.card(card_row(dict(row), evidence_names), index, list(evidence_names)))


def render_html(
    rows_path: Path,
    output: Path,
    *,
    threshold: float,
    model: str,
    evidence_names: list[str],
    network: AccountNetworkView,
    notes: str = "",
) -> None:
    """Render the page from the JSON-lines rows of a scan (read twice: an index, then card by card)."""
    index = []  # (flagged, likelihood, offset)
    skipped_checks = False  # whether any card says "not computed" (the page then says how to compute them)
    n_unsure = 0  # rows answered "can't tell" (a likelihood in the band below the threshold)
    with open(rows_path, "rb") as handle:
        offset = handle.tell()
        for line in iter(handle.readline, b""):
            row = json.loads(line)
            skipped_checks = skipped_checks or bool(row.get("not_computed"))
            n_unsure += row.get("verdict") == CANT_TELL and row.get("likelihood") is not None
            likelihood = row.get("likelihood")
            index.append((bool(row.get("synthetic")), -1.0 if likelihood is None else likelihood, offset))
            offset = handle.tell()
    index.sort(key=lambda item: (not item[0], -item[1]))

    def cards(rows) -> Iterator[tuple[int, dict]]:
        for i, (_, _, row_offset) in enumerate(index):
            rows.seek(row_offset)
            yield i, card_row(json.loads(rows.readline()), evidence_names)

    means = [(caption, png_b64(draw_template(mean))) for caption, mean in network.mean_images()]
    staging = output.with_name(output.name + ".rendering")
    with open(rows_path, "rb") as rows:
        environment().get_template("report.html.j2").stream(
            n_images=len(index),
            n_flagged=sum(1 for item in index if item[0]),
            n_unsure=n_unsure,
            threshold=threshold,
            model=model,
            notes=notes,
            skipped_checks=skipped_checks,
            network=network.summary(),
            mean_images=means,
            evidence_names=evidence_names,
            cards=cards(rows),
        ).dump(str(staging), encoding="utf-8")
    staging.replace(output)
