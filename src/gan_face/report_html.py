"""The HTML report: one self-contained page (no network access) for a person who is not an ML specialist.

Flagged images first; each with a thumbnail on which the landmarks (dots) and the StyleGAN eye template (rings)
are drawn, its likelihood, status and every check's score and explanation; sortable and filterable in the
browser; the network view on top. Thumbnails are embedded as base64 JPEG.

The page is rendered at the end of a scan from the JSON-lines rows written during it (the ``.partial`` file),
holding in memory only each row's likelihood and file offset, so its size, not the scan's, bounds memory.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
from PIL import Image

from .checks.eyes import TEMPLATE_MEAN
from .network import NetworkView, draw_template

THUMBNAIL_SIDE = 224


def thumbnail_b64(image: np.ndarray, side: int = THUMBNAIL_SIDE) -> str:
    pil = Image.fromarray(image)
    pil.thumbnail((side, side), Image.BILINEAR)
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=82)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_thumbnail(data: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


def _png_b64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _overlay(row: Mapping[str, Any]) -> str:
    """SVG drawn over the thumbnail: landmarks as dots, the StyleGAN template as rings, the face box."""
    size = row.get("image_size") or [1, 1]
    width, height = size
    parts = [f'<svg class="overlay" viewBox="0 0 {width} {height}" preserveAspectRatio="none">']
    r = max(width, height) / 60
    for x, y in TEMPLATE_MEAN.reshape(3, 2)[:2] * [width, height]:
        parts.append(f'<circle class="template" cx="{x:.1f}" cy="{y:.1f}" r="{2 * r:.1f}"/>')
    face = row.get("face")
    if face:
        x0, y0, x1, y1 = face["box"]
        parts.append(f'<rect class="box" x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" height="{y1 - y0:.1f}"/>')
        for name, (x, y) in face["landmarks"].items():
            parts.append(f'<circle class="lm {name}" cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}"><title>{name}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def _card(row: Mapping[str, Any], index: int, check_names: list[str]) -> str:
    path = html.escape(str(row["path"]))
    if row.get("error"):
        return (
            f'<div class="card error" data-path="{path}" data-likelihood="-1" data-flagged="0" data-index="{index}">'
            f'<div class="name">{path}</div><div class="err">Could not be read: {html.escape(str(row["error"]))}</div></div>'
        )
    likelihood = float(row["likelihood"])
    flagged = bool(row["synthetic"])
    data = " ".join(
        f'data-{name}="{-1 if row.get(f"check_{name}") is None else row[f"check_{name}"]:.4f}"' for name in check_names
    )
    thumb = row.get("thumbnail")
    image = (
        f'<div class="thumb"><div class="frame"><img alt="{path}" src="data:image/jpeg;base64,{thumb}"/>'
        f'{_overlay(row)}</div></div>'
        if thumb else '<div class="thumb missing">no preview</div>'
    )
    checks = []
    for name in check_names:
        score = row.get(f"check_{name}")
        text = html.escape(row.get("explanations", {}).get(name, ""))
        shown = "n/a" if score is None else f"{score:.2f}"
        level = "" if score is None else ("high" if score >= 0.5 else "low")
        checks.append(f'<tr><th>{name}</th><td class="score {level}">{shown}</td><td>{text}</td></tr>')
    badge = '<span class="badge flag">flagged: likely GAN-made</span>' if flagged else '<span class="badge">not flagged</span>'
    return (
        f'<div class="card{" flagged" if flagged else ""}" data-path="{path}" data-likelihood="{likelihood:.6f}" '
        f'data-flagged="{int(flagged)}" data-index="{index}" {data}>{image}<div class="info">'
        f'<div class="name">{path}</div>{badge}'
        f'<div class="meter"><div style="width:{likelihood * 100:.1f}%"></div></div>'
        f'<div class="lk">likelihood {likelihood:.3f} &middot; status {html.escape(str(row["status"]))}</div>'
        f'<div class="reason">{html.escape(str(row.get("reason") or ""))}</div>'
        f'<table class="checks">{"".join(checks)}</table></div></div>'
    )


def _network_section(view: NetworkView) -> str:
    summary = view.summary()
    parts = ['<section id="network"><h2>Network view</h2>']
    parts.append(
        f"<p>{summary['on_template']} of {summary['with_face']} avatars with a face "
        f"({summary['on_template_share']:.1%}) have their eyes on the StyleGAN template. Real profile photos are "
        "framed by people and rarely do; uncropped StyleGAN faces always do.</p>"
    )
    images = []
    for flagged_only, title in ((True, "mean of the flagged avatars"), (False, "mean of all avatars")):
        mean = view.mean_image(flagged_only)
        if mean is not None:
            images.append(
                f'<figure><img class="mean" src="data:image/png;base64,{_png_b64(draw_template(mean))}"/>'
                f"<figcaption>{title}: sharp eyes inside the rings mean the faces are stacked on the "
                "StyleGAN template</figcaption></figure>"
            )
    parts.append(f'<div class="means">{"".join(images)}</div>')
    if summary["groups"]:
        parts.append("<table class='groups'><tr><th>avatars</th><th>eyes at (fraction of frame)</th><th>examples</th></tr>")
        for group in summary["groups"]:
            where = f"{group['left_eye']} {group['right_eye']}" + (" (StyleGAN template)" if group["on_template"] else "")
            examples = ", ".join(html.escape(p) for p in group["examples"][:6])
            parts.append(f"<tr><td>{group['count']}</td><td>{where}</td><td>{examples}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>No group of three or more avatars shares near-identical landmark positions.</p>")
    parts.append("</section>")
    return "".join(parts)


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{margin:.2em 0}.lead{max-width:70em;color:#444}
#controls{position:sticky;top:0;background:#fafafa;padding:.5em 0;border-bottom:1px solid #ddd;z-index:2}
#controls input,#controls select{margin-right:1em;padding:.2em}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-top:1em}
.card{background:#fff;border:1px solid #ccc;border-radius:6px;width:520px;display:flex;gap:10px;padding:8px}
.card.flagged{border:2px solid #c0392b}.card.error{background:#fff4f4;flex-direction:column}
.thumb{position:relative;width:224px;height:224px;flex:none;background:#eee;display:flex;align-items:center;justify-content:center}
.frame{position:relative;display:inline-block;line-height:0}
.thumb img{max-width:224px;max-height:224px;display:block}
.overlay{position:absolute;left:0;top:0;width:100%;height:100%;pointer-events:none}
.overlay .template{fill:none;stroke:#00dcff;stroke-width:1.5%;vector-effect:non-scaling-stroke;stroke-width:2px}
.overlay .lm{fill:#ffd400;stroke:#000;stroke-width:1px;vector-effect:non-scaling-stroke}
.overlay .box{fill:none;stroke:#fff;stroke-dasharray:4 3;stroke-width:1px;vector-effect:non-scaling-stroke}
.info{flex:1;font-size:13px;min-width:0}.name{font-weight:600;word-break:break-all}
.badge{display:inline-block;margin:.3em 0;padding:1px 6px;border-radius:8px;background:#e8f5e9;color:#2e7d32}
.badge.flag{background:#fdecea;color:#c0392b;font-weight:600}
.meter{height:6px;background:#eee;border-radius:3px}.meter div{height:6px;background:#c0392b;border-radius:3px}
.checks{border-collapse:collapse;margin-top:.4em}.checks th{text-align:left;padding-right:.5em;vertical-align:top}
.checks td{vertical-align:top;padding:1px 4px}.score.high{color:#c0392b;font-weight:600}.score.low{color:#2e7d32}
.reason{margin:.3em 0;font-style:italic}.err{color:#c0392b}
.means{display:flex;gap:2em}.mean{width:256px;height:256px;image-rendering:auto}
figure{margin:0}figcaption{max-width:256px;font-size:12px;color:#555}
.groups td,.groups th{border-bottom:1px solid #ddd;padding:2px 8px;text-align:left;font-size:13px}
"""

SCRIPT = """
const cards=[...document.querySelectorAll('.card')];const box=document.querySelector('.cards');
function apply(){const q=document.getElementById('filter').value.toLowerCase();
const only=document.getElementById('flagged').checked;const key=document.getElementById('sort').value;
const sorted=cards.slice().sort((a,b)=>{if(key==='path')return a.dataset.path.localeCompare(b.dataset.path);
if(key==='default')return (b.dataset.flagged-a.dataset.flagged)||(b.dataset.likelihood-a.dataset.likelihood);
return (parseFloat(b.dataset[key])||0)-(parseFloat(a.dataset[key])||0);});
let shown=0;for(const c of sorted){box.appendChild(c);const ok=(!only||c.dataset.flagged==='1')&&c.dataset.path.toLowerCase().includes(q);
c.style.display=ok?'':'none';shown+=ok;}document.getElementById('count').textContent=shown+' shown';}
for(const id of ['filter','flagged','sort'])document.getElementById(id).addEventListener('input',apply);apply();
"""


def render_html(rows_path: Path, output: Path, *, threshold: float, model: str, check_names: list[str]) -> None:
    """Render the page from the JSON-lines rows of a scan (read twice: an index, then card by card)."""
    index = []  # (flagged, likelihood, offset)
    view = NetworkView()
    with open(rows_path, "rb") as handle:
        offset = handle.tell()
        for line in iter(handle.readline, b""):
            row = json.loads(line)
            thumb = row.get("thumbnail")
            view.add(row["path"], decode_thumbnail(thumb) if thumb else None, row)
            flagged = bool(row.get("synthetic"))
            index.append((flagged, -1.0 if row.get("likelihood") is None else row["likelihood"], offset))
            offset = handle.tell()
    index.sort(key=lambda item: (not item[0], -item[1]))
    n_flagged = sum(1 for item in index if item[0])
    tmp = output.with_name(output.name + ".rendering")
    with open(rows_path, "rb") as rows, open(tmp, "w", encoding="utf-8") as out:
        out.write(
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>gan-face report</title>"
            f"<style>{STYLE}</style></head><body><h1>gan-face report</h1>"
            f"<p class='lead'>{len(index)} images, <b>{n_flagged} flagged</b> as likely GAN-generated (likelihood at "
            f"or above {threshold:.3f}; model {html.escape(model)}). A flag is a lead to check by eye, not a "
            "verdict: each card says which evidence weighed most. Yellow dots are the face's landmarks, cyan rings "
            "are where StyleGAN puts the eyes.</p>"
        )
        out.write(_network_section(view))
        sort_options = "".join(f"<option value='{n}'>{n} score</option>" for n in check_names)
        out.write(
            "<div id='controls'><input id='filter' placeholder='filter by file name'/>"
            "<label><input type='checkbox' id='flagged'/> flagged only</label> "
            "<select id='sort'><option value='default'>flagged first, by likelihood</option>"
            f"<option value='likelihood'>likelihood</option><option value='path'>file name</option>{sort_options}"
            "</select><span id='count'></span></div><div class='cards'>"
        )
        for i, (_, _, offset) in enumerate(index):
            rows.seek(offset)
            out.write(_card(json.loads(rows.readline()), i, check_names))
        out.write(f"</div><script>{SCRIPT}</script></body></html>\n")
    tmp.replace(output)
