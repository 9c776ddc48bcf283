"""Evaluate an edited clip against its original: identity, temporal consistency, fidelity,
locality; one pair, or a folder of pairs; as a dict (JSON-ready), a text table or an HTML report.

Both clips are decoded from their files and the face is tracked in each on its own, so the
numbers describe the output as a viewer gets it (after encoding), not the pipeline's internals.
"""

from __future__ import annotations

import base64
import html
import math
import re
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from s3edit.edit.attributes import resolve_attribute
from s3edit.errors import S3EditError, UsageError
from s3edit.face.align import align_crop, square_from_landmarks
from s3edit.face.identity import EMBED_DIM, IdentityEncoder
from s3edit.face.landmarks import FaceDetector
from s3edit.metrics.attributes import CROP_SIZE, ImageAttributeClassifier, load_image_classifier
from s3edit.metrics.fidelity import (
    NOISE_FLOOR,
    attribute_changes,
    attribute_region,
    change_inside,
    locality,
)
from s3edit.metrics.identity import (
    ProgressHook,
    embed_tracked,
    identity_similarity,
    no_progress,
    sampled,
    temporal_identity,
    track_face,
)
from s3edit.video import VIDEO_SUFFIXES, probe, read_frames
from s3edit.weights import default_weights_dir

SUMMARY_KEYS = ("identity", "tl_id", "tg_id", "target_change", "off_target_change", "locality")


def default_image_classifier_dir() -> Path | None:
    """WEIGHTS/image_classifier if it holds a trained classifier (see `train_image_classifier`)."""
    folder = default_weights_dir() / "image_classifier"
    return folder if (folder / "config.json").exists() else None


class _Probabilities:
    """Attribute probabilities of crops, computed in batches as frames stream past."""

    def __init__(self, model: ImageAttributeClassifier, rows: int, batch_size: int = 32):
        self.model, self.batch_size = model, batch_size
        self.values = np.full((rows, len(model.config.attributes)), np.nan, np.float32)
        self._crops: list[np.ndarray] = []
        self._rows: list[int] = []

    def add(self, row: int, crop: np.ndarray) -> None:
        self._crops.append(crop)
        self._rows.append(row)
        if len(self._crops) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if self._crops:
            self.values[self._rows] = self.model.probabilities(np.stack(self._crops))
        self._crops, self._rows = [], []


def evaluate_pair(original: Path, edited: Path, attr: str, *,
                  image_classifier_dir: Path | None = None, every: int = 1,
                  face_index: int | None = None, device: str = "cpu",
                  noise_floor: float = NOISE_FLOOR,
                  progress: ProgressHook | None = None) -> dict:
    """All metrics of one edited clip against its original, on every `every`-th frame.

    Without `image_classifier_dir` the default folder is tried (`default_image_classifier_dir`);
    if there is none, the fidelity numbers are None. NaN values come back as None. Summary keys
    are SUMMARY_KEYS plus `frames` (compared: the shorter clip's count) and `pixel_change`;
    `attribute_changes` maps each attribute to its mean signed change; `per_frame` holds the
    curves the report plots. Raises NoFaceError if either clip shows no face at all.
    """
    progress = progress or no_progress
    attr = resolve_attribute(attr)
    if image_classifier_dir is not None:
        image_classifier_dir = Path(image_classifier_dir)
        if not (image_classifier_dir / "config.json").exists():
            raise UsageError(f"{image_classifier_dir}: not an image classifier folder "
                             "(no config.json)")
    classifier_dir = image_classifier_dir or default_image_classifier_dir()
    info_o, info_e = probe(original), probe(edited)
    if info_o.frame_shape != info_e.frame_shape:
        raise S3EditError(f"{edited}: frames are {info_e.display_width}x{info_e.display_height}, "
                          f"the original's {info_o.display_width}x{info_o.display_height}")
    frames = min(info_o.frame_count, info_e.frame_count)
    track_o = track_face(info_o, face_index, progress, "tracking original")
    track_e = track_face(info_e, face_index, progress, "tracking edited")

    indices = sampled(frames, every)
    region = attribute_region(attr)
    encoder = IdentityEncoder()
    emb_o, emb_e = (np.full((len(indices), EMBED_DIM), np.nan, np.float32) for _ in range(2))
    inside, total = (np.full(len(indices), np.nan) for _ in range(2))
    model = None if classifier_dir is None else load_image_classifier(classifier_dir, device)
    probs_o, probs_e = ((None, None) if model is None else
                        (_Probabilities(model, len(indices)), _Probabilities(model, len(indices))))

    advance = progress("measuring", frames)
    with closing(read_frames(info_o)) as frames_o, closing(read_frames(info_e)) as frames_e:
        # zip stops at the shorter clip: frames beyond it have nothing to compare with.
        for t, (fo, fe) in enumerate(zip(frames_o, frames_e, strict=False)):
            if t >= frames:  # more frames than probed: the arrays end at the probed count
                break
            advance(1)
            if t % every:
                continue
            k = t // every
            emb_o[k] = embed_tracked(encoder, fo, track_o, t)
            emb_e[k] = embed_tracked(encoder, fe, track_e, t)
            if track_o.valid[t]:
                inside[k], total[k] = change_inside(fo, fe, track_o.mesh[t], region, noise_floor)
            if probs_o is not None and track_o.valid[t] and track_e.valid[t]:
                probs_o.add(k, align_crop(fo, track_o.squares[t], CROP_SIZE))
                probs_e.add(k, align_crop(fe, track_e.squares[t], CROP_SIZE))

    similarity = identity_similarity(emb_o, emb_e)
    tl_id, tg_id = temporal_identity(emb_o, emb_e)
    with np.errstate(invalid="ignore", divide="ignore"):
        frame_locality = np.where(total > 0, inside / total, np.nan)
    target_o = target_e = np.full(len(indices), np.nan)
    target_change = off_target_change = math.nan
    changes: dict[str, float | None] = {}
    if model is not None:
        probs_o.flush()
        probs_e.flush()
        index = model.index(attr)
        target_o, target_e = probs_o.values[:, index], probs_e.values[:, index]
        target_change, off_target_change, per_attribute = attribute_changes(
            probs_o.values, probs_e.values, index)
        changes = {a: _number(c) for a, c in
                   zip(model.config.attributes, per_attribute, strict=True)}
    with_face = np.isfinite(similarity)
    with_mesh = np.isfinite(total)
    height, width, _ = info_o.frame_shape
    return {
        "original": str(original), "edited": str(edited), "attr": attr, "region": region,
        "frames": frames, "every": every, "frames_sampled": len(indices),
        "frames_with_face": int(with_face.sum()),
        "identity": _number(np.mean(similarity[with_face]) if with_face.any() else math.nan),
        "tl_id": _number(tl_id), "tg_id": _number(tg_id),
        "target_change": _number(target_change),
        "off_target_change": _number(off_target_change),
        "attribute_changes": changes,
        "locality": _number(locality(inside, total)),
        # Locality of a change lost in codec noise means little: this says how big it was.
        "pixel_change": _number(np.nanmean(total) / (height * width) if with_mesh.any()
                                else math.nan),
        "image_classifier": None if classifier_dir is None else str(classifier_dir),
        "per_frame": {
            "frame": indices.tolist(),
            "identity": _numbers(similarity),
            "target_original": _numbers(target_o),
            "target_edited": _numbers(target_e),
            "locality": _numbers(frame_locality),
        },
    }


def _number(value: float) -> float | None:
    """JSON-ready: rounded, NaN as None."""
    return round(float(value), 4) if math.isfinite(value) else None


def _numbers(values: np.ndarray) -> list[float | None]:
    return [_number(v) for v in values]


# --- A folder of pairs ----------------------------------------------------------------------

# `s3edit apply --out-dir` names outputs `{stem}.{attr.lower()}{scale:+g}.mp4`.
EDITED_NAME = re.compile(r"^(?P<stem>.+)\.(?P<attr>[a-z0-9_]+)(?P<scale>[+-](?:inf|nan|[0-9.e+-]+))"
                         r"\.mp4$")


@dataclass
class SuitePair:
    edited: Path
    original: Path | None  # None when no original with the stem lies beside it
    attr: str
    scale: float


def find_pairs(folder: Path) -> list[SuitePair]:
    """Edited clips `NAME.ATTR+SCALE.mp4` of a folder, each with its original `NAME.<video>`.

    A file whose name has that shape but no attribute of the 40 is taken for an original.
    """
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a folder")
    pairs = []
    for path in sorted(folder.iterdir()):
        match = EDITED_NAME.match(path.name)
        if not match or not path.is_file():
            continue
        try:
            attr, scale = resolve_attribute(match["attr"]), float(match["scale"])
        except (UsageError, ValueError):
            continue
        originals = [folder / f"{match['stem']}{s}" for s in VIDEO_SUFFIXES]
        original = next((p for p in originals if p.is_file()), None)
        pairs.append(SuitePair(edited=path, original=original, attr=attr, scale=scale))
    return pairs


def evaluate_suite(folder: Path, *, image_classifier_dir: Path | None = None, every: int = 1,
                   face_index: int | None = None, device: str = "cpu",
                   progress: ProgressHook | None = None) -> list[dict]:
    """`evaluate_pair` over every pair of `find_pairs(folder)`, one row each.

    Rows add `name` and `scale`; a pair that cannot be measured (no original, no face,
    unreadable video) gets an `error` message instead of numbers, and the others still run.
    """
    rows = []
    for pair in find_pairs(folder):
        row: dict = {"name": pair.edited.name, "attr": pair.attr, "scale": pair.scale}
        if pair.original is None:
            stem = EDITED_NAME.match(pair.edited.name)["stem"]
            row["error"] = f"no original {stem}.mp4 (or other video) beside it"
        else:
            try:
                row.update(evaluate_pair(pair.original, pair.edited, pair.attr,
                                         image_classifier_dir=image_classifier_dir, every=every,
                                         face_index=face_index, device=device,
                                         progress=progress))
            except S3EditError as error:
                row["error"] = str(error)
        rows.append(row)
    return rows


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
