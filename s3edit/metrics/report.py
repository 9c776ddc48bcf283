"""The text table and the HTML report of `s3edit eval`'s measurements (`evaluate.py` makes
them)."""

from __future__ import annotations

import base64
import html
import math
from contextlib import closing
from pathlib import Path

import cv2
import numpy as np

from s3edit.face.align import align_crop, square_from_landmarks
from s3edit.face.landmarks import FaceDetector
from s3edit.metrics.evaluate import SUMMARY_KEYS
from s3edit.video import probe, read_frames

_COLUMNS = (("name", "clip", "{}"), ("attr", "attr", "{}"), ("scale", "scale", "{:+g}"),
            ("frames", "frames", "{}"), ("identity", "identity", "{:.3f}"),
            ("tl_id", "TL-ID", "{:.3f}"), ("tg_id", "TG-ID", "{:.3f}"),
            ("target_change", "target", "{:+.3f}"),
            ("off_target_change", "off-target", "{:.3f}"), ("locality", "locality", "{:.3f}"))


def format_table(rows: list[dict]) -> str:
    """Plain-text table of summary rows (from `evaluate_suite`, or `evaluate_pair` results).

    Missing numbers show as '-'; a row with an error shows its message after the name.
    """
    head = [title for _, title, _ in _COLUMNS]
    body = []
    for row in rows:
        name = row.get("name") or Path(row.get("edited", "?")).name
        if "error" in row:
            body.append([name, f"error: {row['error']}"])
            continue
        cells = [name]
        for key, _, fmt in _COLUMNS[1:]:
            value = row.get(key)
            cells.append("-" if value is None else fmt.format(value))
        body.append(cells)
    widths = [max(len(r[i]) for r in [head, *body] if len(r) > i and len(r) == len(head))
              for i in range(len(head))]
    lines = []
    for cells in [head, *body]:
        if len(cells) < len(head):  # an error row: the message runs on without columns
            lines.append(f"{cells[0]:<{widths[0]}}  {cells[1]}")
        else:
            lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths, strict=True))))
    return "\n".join(line.rstrip() for line in lines)


# --- HTML report ----------------------------------------------------------------------------

_STRIP_SIZE = 192


def write_report(result: dict, original: Path, edited: Path, out_html: Path,
                 strip_frames: int = 4) -> Path:
    """A self-contained HTML page: summary, per-frame plots (inline SVG) and a before/after
    strip of aligned crops (embedded PNG) with the amplified difference below."""
    per = result["per_frame"]
    frames = per["frame"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>s3edit eval: {html.escape(Path(edited).name)}</title>",
        "<style>body{font-family:sans-serif;margin:24px;max-width:900px}"
        "td,th{padding:2px 10px;text-align:left}td.n{text-align:right}"
        "img{display:block}.note{color:#a33}</style></head><body>",
        f"<h1>{html.escape(Path(edited).name)}</h1>",
        f"<p>Original <code>{html.escape(str(original))}</code>, edited "
        f"<code>{html.escape(str(edited))}</code>; attribute <b>{html.escape(result['attr'])}"
        f"</b>, region <b>{result['region']}</b>; {result['frames_with_face']} of "
        f"{result['frames_sampled']} sampled frames (every {result['every']}) have the face in "
        "both clips.</p>",
        _summary_table(result),
        _moved_table(result),
    ]
    if result["image_classifier"] is None:
        parts.append("<p class='note'>No image attribute classifier was given or found, so "
                     "attribute fidelity was not measured (train one with "
                     "<code>train_image_classifier</code> and pass its folder).</p>")
    parts.append("<h2>Per frame</h2>")
    parts.append(_svg_plot("identity: cosine similarity, edited vs original frame", frames,
                           [("identity", "#1f77b4", per["identity"])],
                           _low_range(per["identity"])))
    if result["image_classifier"] is not None:
        parts.append(_svg_plot(f"P({result['attr']}) from the image classifier", frames,
                               [("original", "#7f7f7f", per["target_original"]),
                                ("edited", "#d62728", per["target_edited"])], (0.0, 1.0)))
    parts.append(_svg_plot(f"locality: share of the pixel change inside the {result['region']}",
                           frames, [("locality", "#2ca02c", per["locality"])], (0.0, 1.0)))
    parts.append("<h2>Before / after</h2>")
    parts.append(_strip(result, original, edited, strip_frames))
    parts.append("</body></html>")
    out_html = Path(out_html)
    out_html.write_text("\n".join(parts), encoding="utf-8")
    return out_html


_EXPLAIN = {
    "identity": "mean cosine similarity of identity embeddings, edited vs same original frame",
    "tl_id": "TL-ID: neighbouring-frame identity consistency relative to the original (1 = "
             "as steady as the source)",
    "tg_id": "TG-ID: all-pairs identity consistency relative to the original",
    "target_change": "mean change of the target attribute's probability (edited - original)",
    "off_target_change": "mean absolute change of the other 39 attributes' probabilities",
    "locality": "share of the pixel change inside the attribute's region",
    "pixel_change": "mean change per pixel of the whole frame, in 0-255 levels above the codec "
                    "noise floor",
}


def _summary_table(result: dict) -> str:
    rows = []
    for key in (*SUMMARY_KEYS, "pixel_change"):
        value = result[key]
        shown = "not measured" if value is None else f"{value:.3f}"
        rows.append(f"<tr><th>{key}</th><td class='n'>{shown}</td>"
                    f"<td>{html.escape(_EXPLAIN[key])}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _moved_table(result: dict, count: int = 6) -> str:
    """The other attributes the edit moved most, signed: what it dragged along."""
    moved = sorted(((a, c) for a, c in result["attribute_changes"].items()
                    if a != result["attr"] and c is not None), key=lambda ac: -abs(ac[1]))
    if not moved:
        return ""
    rows = "".join(f"<tr><th>{html.escape(a)}</th><td class='n'>{c:+.3f}</td></tr>"
                   for a, c in moved[:count])
    return ("<h2>Other attributes that moved most</h2><p>Mean change of the image "
            f"classifier's probability.</p><table>{rows}</table>")


def _low_range(values: list[float | None]) -> tuple[float, float]:
    """0.1-rounded range from below the lowest value (at most 0.8) up to 1."""
    finite = [v for v in values if v is not None]
    low = min([0.8, *finite])
    return math.floor(low * 10) / 10, 1.0


def _svg_plot(title: str, x: list[int], series: list[tuple[str, str, list[float | None]]],
              y_range: tuple[float, float], width: int = 760, height: int = 190) -> str:
    """A line plot as inline SVG; None values break the line (a lone point shows as a dot)."""
    left, right, top, bottom = 44, 12, 22, 26
    x0, x1 = (x[0], x[-1]) if x else (0, 1)
    x1 = x1 if x1 > x0 else x0 + 1
    y0, y1 = y_range

    def px(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * (width - left - right)

    def py(v: float) -> float:
        v = min(max(v, y0), y1)
        return top + (y1 - v) / (y1 - y0) * (height - top - bottom)

    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
           f"font-size='11' font-family='sans-serif'>",
           f"<text x='{left}' y='14' font-weight='bold'>{html.escape(title)}</text>"]
    for tick in np.linspace(y0, y1, 3):
        out.append(f"<line x1='{left}' x2='{width - right}' y1='{py(tick):.1f}' "
                   f"y2='{py(tick):.1f}' stroke='#ddd'/>"
                   f"<text x='{left - 4}' y='{py(tick) + 4:.1f}' text-anchor='end'>"
                   f"{tick:.2f}</text>")
    out.append(f"<text x='{left}' y='{height - 8}'>frame {x0}</text>"
               f"<text x='{width - right}' y='{height - 8}' text-anchor='end'>frame {x1}</text>")
    for i, (label, colour, ys) in enumerate(series):
        segment: list[str] = []
        for xv, yv in [*zip(x, ys, strict=True), (None, None)]:
            if yv is not None:
                segment.append(f"{px(xv):.1f},{py(yv):.1f}")
                continue
            if len(segment) == 1:
                cx, cy = segment[0].split(",")
                out.append(f"<circle cx='{cx}' cy='{cy}' r='2' fill='{colour}'/>")
            elif segment:
                out.append(f"<polyline fill='none' stroke='{colour}' stroke-width='1.5' "
                           f"points='{' '.join(segment)}'/>")
            segment = []
        out.append(f"<text x='{width - right - 90 * (len(series) - i)}' y='14' "
                   f"fill='{colour}'>&#9632; {html.escape(label)}</text>")
    out.append("</svg>")
    return "".join(out)


def _strip(result: dict, original: Path, edited: Path, count: int) -> str:
    """Aligned crops of a few frames with the face: original, edited, |difference| x4."""
    per = result["per_frame"]
    candidates = [f for f, v in zip(per["frame"], per["identity"], strict=True) if v is not None]
    if not candidates:
        return "<p class='note'>No frame has the face in both clips.</p>"
    picks = sorted({candidates[int(round(i))]
                    for i in np.linspace(0, len(candidates) - 1, min(count, len(candidates)))})
    tiles: dict[str, list[np.ndarray]] = {"original": [], "edited": [], "|difference| x4": []}
    info_o, info_e = probe(original), probe(edited)
    with FaceDetector(video=False) as detect, closing(read_frames(info_o)) as frames_o, \
            closing(read_frames(info_e)) as frames_e:
        for t, (fo, fe) in enumerate(zip(frames_o, frames_e, strict=False)):
            if t > picks[-1]:
                break
            if t not in picks:
                continue
            faces = detect(fo)
            square = square_from_landmarks(max(faces, key=lambda f: f.area).lm68) if faces \
                else _centre_square(fo.shape)
            crop_o = align_crop(fo, square, _STRIP_SIZE)
            crop_e = align_crop(fe, square, _STRIP_SIZE)
            diff = np.abs(crop_o.astype(np.int16) - crop_e).mean(-1) * 4
            heat = cv2.applyColorMap(np.clip(diff, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
            tiles["original"].append(crop_o)
            tiles["edited"].append(crop_e)
            tiles["|difference| x4"].append(heat[:, :, ::-1])
    head = "".join(f"<th>frame {t}</th>" for t in picks)
    rows = "".join(f"<tr><th>{html.escape(name)}</th>"
                   + "".join(f"<td><img src='{_png(img)}'></td>" for img in images) + "</tr>"
                   for name, images in tiles.items())
    return f"<table><tr><th></th>{head}</tr>{rows}</table>"


def _centre_square(shape: tuple[int, ...]) -> np.ndarray:
    """The [centre, x, y] square of the largest centred square of a frame (no face found)."""
    h, w = shape[:2]
    half = min(h, w) / 2
    return np.array([[w / 2, h / 2], [half, 0.0], [0.0, half]])


def _png(rgb: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode("ascii")
