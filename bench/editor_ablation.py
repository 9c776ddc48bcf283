"""Editors compared on real clips through the whole pipeline: the ablation table of issue 4.

Each clip is cut to its first --frames frames, tracked and DDIM-inverted once (its keyframes,
as apply runs them); then every editor x attribute decodes its edit, pastes it back, writes a
clip, and `evaluate_pair` (what
`s3edit eval` runs) measures it against the cut original: identity, TL-ID, TG-ID, target and
off-target change from the image classifier, locality.

    python bench/editor_ablation.py --out /tmp/ablation --scale 0.3 0.6 \
        --editor linear --editor lt --editor s3 \
        --editor "s3 no self-training=s3:runs/ablation/noself/s3"

An --editor is NAME, or LABEL=NAME[:FOLDER] with FOLDER a trained lt or s3 transform (default:
the one in --weights). With --expressions, expression attributes (Smiling...) move the landmark
codes as `s3edit apply` does, so every editor edits them alike; without it, every attribute goes
through the editor's identity edit (the papers' setting). Editors reach different target
changes at the same --scale, so with several scales a last table compares them at equal target
change: each editor's metrics are interpolated, per attribute and clip, at the target change
the first editor reaches there at each scale, then given as mean ± sd over clips with the
paired difference from the first editor. Rows (with each attribute's mean change) go to
OUT/rows.jsonl as they are measured and a rerun skips those already there, so a stopped run
resumes and a later run can add editors or scales. `--tables A/rows.jsonl B/rows.jsonl
--reference s3` prints the tables of earlier runs together (same clips and frames) and runs
nothing. `--regrade A --classifier C --out B` measures the clips run A kept again, graded by
another image classifier C, and renders nothing. A benchmark, not a test.
"""

from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")  # before mediapipe loads: hush its C++ logs

import argparse
import hashlib
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import DEV_CLIPS, cut, default_data_dir, load_editor_spec, resolve_video

from s3edit.metrics.evaluate import evaluate_pair
from s3edit.model.face_model import FaceModel
from s3edit.options import (
    BLENDS,
    DEFAULT_ETA,
    DEFAULT_GUIDANCE,
    DEFAULT_KEYFRAME_EVERY,
    DEFAULT_PRECISION,
    HAIR_NOISES,
    LENSES,
    EditOptions,
)
from s3edit.pipeline import Pipeline
from s3edit.video import VideoWriter, probe
from s3edit.weights import default_weights_dir

# The metrics compared at equal target change, then the target's probabilities.
COMPARED = ("identity", "tl_id", "tg_id", "target_change", "off_target_change", "locality")
METRICS = (*COMPARED, "target_before", "target_after", "success_rate")


class InvertOnce:
    """A face model that remembers its results: a clip's inversion is the same for every
    editor, so only the edit's decoding runs again."""

    def __init__(self, model: FaceModel):
        self.model, self.resolution = model, model.resolution
        self.attributes, self.exact_inverse = model.attributes, model.exact_inverse
        self.cache: dict[str, torch.Tensor] = {}

    def _memo(self, fn, *tensors: torch.Tensor, tag: str = "") -> torch.Tensor:
        key = fn.__name__ + tag + "".join(
            hashlib.sha1(t.detach().cpu().numpy().tobytes()).hexdigest() for t in tensors)
        if key not in self.cache:
            self.cache[key] = fn(*tensors)
        return self.cache[key]

    def encode(self, crops, identity, landmarks):
        return self._memo(self.model.encode, crops, identity, landmarks)

    def decode(self, latents, identity, landmarks, reference=None, guidance=1.0):
        if reference is not None and guidance != 1:
            return self._memo(lambda *t: self.model.decode(*t[:3], reference=t[3:],
                                                           guidance=guidance),
                              latents, identity, landmarks, *reference, tag=f"w{guidance}")
        return self._memo(self.model.decode, latents, identity, landmarks)


def edited_path(src: Path, attr: str, label: str, scale: float) -> Path:
    """Where an edit of the cut clip `src` is written (and found again by --regrade)."""
    return src.with_suffix(f".{attr}.{label.replace(' ', '_')}.{scale}.mp4")


def measured(result: dict, scale: float) -> dict:
    """What a row keeps of `evaluate_pair`'s result."""
    return {**success(result, scale),
            **{k: result[k] for k in (*COMPARED, "pixel_change", "attribute_changes")}}


def success(result: dict, scale: float) -> dict:
    """The target's mean probability before and after, and the share of frames where the edit
    succeeds: from under 0.1 to over 0.7 when adding (scale > 0), from over 0.5 to under 0.3
    when removing, among the frames where the original qualifies (None where none does)."""
    before = np.array([np.nan if v is None else v for v in result["per_frame"]["target_original"]])
    after = np.array([np.nan if v is None else v for v in result["per_frame"]["target_edited"]])
    qualifies = before < 0.1 if scale > 0 else before > 0.5
    done = after > 0.7 if scale > 0 else after < 0.3
    rate = float(done[qualifies].mean()) if qualifies.any() else None
    return {"target_before": float(np.nanmean(before)), "target_after": float(np.nanmean(after)),
            "success_rate": rate}


def _groups(rows: list[dict], by: tuple[str, ...]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row)
    return groups


def spread(values: list[float], signed: bool = False) -> str:
    """Mean ± standard deviation over clips (the sample's, n - 1); the mean alone for one."""
    mean = f"{np.mean(values):+.3f}" if signed else f"{np.mean(values):.3f}"
    return mean if len(values) < 2 else f"{mean} ± {np.std(values, ddof=1):.3f}"


def table(rows: list[dict], by: tuple[str, ...]) -> str:
    """Each group's metrics as mean ± sd over its rows (clips)."""
    groups = _groups(rows, by)
    head = [*by, "n", *METRICS, "edit s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, group in groups.items():
        cells = [*map(str, key), str(len(group))]
        for metric in (*METRICS, "edit_seconds"):
            values = [r[metric] for r in group if r.get(metric) is not None]
            cells.append(spread(values, metric == "target_change") if values else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# How far past the target changes an editor's scales reach on a clip the reference's may lie
# and still be compared: the classifier saturates near 1, so editors that both draw the glasses
# fully rarely bracket each other (s3 at 0.6 and linear at 1.0 on Eyeglasses: +0.960 against
# +0.980 on dpe-s, within 0.004 on the other four clips).
TARGET_TOLERANCE = 0.03


def at_equal_target(rows: list[dict], reference: str) -> str:
    """Per attribute and scale of `reference`: every editor's metrics on each clip,
    interpolated between that editor's scales on the clip at the target change `reference`
    reaches there, then mean ± sd over the clips, and each metric's paired difference from
    `reference` (mean ± sd over the same clips). A clip counts for an editor only where the
    reference's target change lies inside the range its scales cover on that clip, or within
    TARGET_TOLERANCE of its ends (there taking the end's metrics)."""
    curves: dict[tuple[str, str, str], list[tuple[float, dict]]] = {}
    for row in rows:
        curves.setdefault((row["attr"], row["clip"], row["editor"]), []).append(
            (row["target_change"], row))
    for points in curves.values():
        points.sort(key=lambda p: p[0])
    editors = list(dict.fromkeys(r["editor"] for r in rows))
    metrics = [m for m in COMPARED if m != "target_change"]
    lines = ["| attr | scale | target change | editor | clips | " + " | ".join(
        f"{m} (- {reference})" for m in metrics) + " |", "|" + "---|" * (len(metrics) + 5)]
    for (attr, scale), group in sorted(_groups([r for r in rows if r["editor"] == reference],
                                               ("attr", "scale")).items()):
        targets = [r["target_change"] for r in group]
        for editor in editors:
            values: dict[str, list[float]] = {m: [] for m in metrics}
            differences: dict[str, list[float]] = {m: [] for m in metrics}
            for ref in group:
                points = curves.get((attr, ref["clip"], editor), [])
                xs = [x for x, _ in points]
                if not xs or not (xs[0] - TARGET_TOLERANCE <= ref["target_change"]
                                  <= xs[-1] + TARGET_TOLERANCE):
                    continue
                for m in metrics:
                    value = float(np.interp(ref["target_change"], xs, [r[m] for _, r in points]))
                    values[m].append(value)
                    differences[m].append(value - ref[m])
            n = len(values[metrics[0]])
            cells = ["-"] * len(metrics) if not n else [
                spread(values[m]) + ("" if editor == reference
                                     else f" ({spread(differences[m], signed=True)})")
                for m in metrics]
            lines.append(f"| {attr} | {scale:g} | {spread(targets, signed=True)} | {editor} | "
                         f"{n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, help="folder for clips and rows.jsonl")
    p.add_argument("--tables", type=Path, nargs="+",
                   help="print the tables of these rows.jsonl files together; run nothing")
    p.add_argument("--reference",
                   help="editor the last table compares the others with (default: the first row's)")
    p.add_argument("--data", type=Path, default=default_data_dir(),
                   help="shared data folder (env S3EDIT_SHARED_DATA)")
    p.add_argument("--clips", nargs="+", default=list(DEV_CLIPS), help="relative to DATA/videos")
    p.add_argument("--attrs", nargs="+", default=["Eyeglasses", "Smiling", "Young"])
    p.add_argument("--editor", dest="editors", action="append",
                   help="NAME or LABEL=NAME[:FOLDER]; repeat (default: linear, lt, s3)")
    p.add_argument("--scale", dest="scales", type=float, nargs="+", default=[0.3])
    p.add_argument("--frames", type=int, default=32, help="first N frames of each clip")
    p.add_argument("--every", type=int, default=2, help="measure every N-th frame")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--refine", type=int, default=3)
    p.add_argument("--guidance", default=DEFAULT_GUIDANCE, help="apply's --guidance")
    p.add_argument("--eta", type=float, default=DEFAULT_ETA,
                   help="stochastic decoding (apply's --eta)")
    p.add_argument("--seed", type=int, default=0, help="its noise's seed (apply's --seed)")
    p.add_argument("--keyframe-every", type=int, default=DEFAULT_KEYFRAME_EVERY,
                   help="apply's --keyframe-every (1: the model on every frame)")
    p.add_argument("--precision", default=DEFAULT_PRECISION, help="apply's --precision")
    p.add_argument("--blend", default=BLENDS[0], choices=BLENDS, help="apply's --blend")
    p.add_argument("--hair-noise", default=HAIR_NOISES[0], choices=HAIR_NOISES,
                   help="apply's --hair-noise")
    p.add_argument("--lenses", default=LENSES[0], choices=LENSES, help="apply's --lenses")
    p.add_argument("--weights", type=Path, default=default_weights_dir())
    p.add_argument("--classifier", type=Path,
                   help="the image classifier that grades the edits (default: s3edit eval's)")
    p.add_argument("--regrade", type=Path, metavar="RUN",
                   help="measure the clips an earlier --out RUN kept again, render nothing")
    p.add_argument("--expressions", action="store_true",
                   help="edit expression attributes through the landmark codes, as apply does")
    args = p.parse_args()
    if args.tables:
        print_tables([json.loads(line) for path in args.tables
                      for line in path.read_text().splitlines()], args.reference)
        return
    if args.out is None:
        p.error("--out or --tables is required")
    args.out.mkdir(parents=True, exist_ok=True)
    rows_file = args.out / "rows.jsonl"
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()] \
        if rows_file.exists() else []
    done = {(r["clip"], r["attr"], r["editor"], r["scale"]) for r in rows}
    if args.regrade:
        regrade(args.regrade, rows_file, done, args.classifier, args.every)
        print_tables([json.loads(line) for line in rows_file.read_text().splitlines()],
                     args.reference)
        return

    editors = [load_editor_spec(s, args.weights) for s in args.editors or ["linear", "lt", "s3"]]
    pipeline = Pipeline.from_weights(args.weights, editor="linear", steps=args.steps,
                                     refine=args.refine, eta=args.eta,
                                     seed=args.seed, device="cpu", precision=args.precision)
    shared_model = pipeline.model
    if not args.expressions:
        pipeline.expressions = None
    for clip_name in args.clips:
        if all((clip_name, a, label, s) in done
               for a in args.attrs for label, _ in editors for s in args.scales):
            continue
        src = args.out / (clip_name.replace("/", "_"))
        cut(resolve_video(clip_name, args.data), args.frames, src)
        info = probe(src)
        pipeline.model, pipeline.editor = InvertOnce(shared_model), editors[0][1]
        start = time.perf_counter()
        clip = pipeline.analyse(info, EditOptions("Eyeglasses", 0))
        shared_seconds = time.perf_counter() - start
        for attr in args.attrs:
            for (label, editor), scale in itertools.product(editors, args.scales):
                if (clip_name, attr, label, scale) in done:
                    continue
                edited = edited_path(src, attr, label, scale)
                opts = EditOptions(attr, scale, blend=args.blend,
                                   keyframe_every=args.keyframe_every,
                                   hair_noise=args.hair_noise, lenses=args.lenses,
                                   guidance=args.guidance, overwrite=True, audio=False)
                edit_start = time.perf_counter()
                writer = VideoWriter(edited, info, audio_from=None, overwrite=True)
                pipeline.editor = editor
                pipeline.render(info, clip, opts, writer)
                edit_seconds = time.perf_counter() - edit_start
                result = evaluate_pair(src, edited, attr, every=args.every,
                                       image_classifier_dir=args.classifier)
                row = {"clip": clip_name, "attr": attr, "editor": label, "scale": scale,
                       "frames": info.frame_count, "edit_seconds": round(edit_seconds, 2),
                       "shared_seconds": round(shared_seconds, 2),
                       **measured(result, scale)}
                rows.append(row)
                with rows_file.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{clip_name} {attr} {label}: " + ", ".join(
                    f"{k} {row[k]}" for k in (*METRICS, "edit_seconds")), flush=True)
    print(f"\nfirst {args.frames} frames, {args.steps} steps, refine {args.refine}, eta "
          f"{args.eta}, blend {args.blend}, hair noise {args.hair_noise}, lenses {args.lenses}, "
          f"keyframes every {args.keyframe_every}, measured every {args.every} frames; edit s = "
          "decoding the edit, pasting back and encoding, and for the first edit of a clip its "
          f"inversion (cached for the others); tracking, done once per clip, took "
          f"{np.mean([r['shared_seconds'] for r in rows]):.1f} s a clip on average\n")
    print_tables(rows, args.reference)


def regrade(run: Path, rows_file: Path, done: set, classifier: Path | None, every: int) -> None:
    """Measure again each clip that `run` kept (its rows' clips) into `rows_file`."""
    source = run / "rows.jsonl"
    if not source.exists():
        raise SystemExit(f"error: {source}: no rows to regrade")
    for line in source.read_text().splitlines():
        row = json.loads(line)
        key = (row["clip"], row["attr"], row["editor"], row["scale"])
        src = run / row["clip"].replace("/", "_")
        edited = edited_path(src, row["attr"], row["editor"], row["scale"])
        if key in done or not edited.exists():
            continue
        result = evaluate_pair(src, edited, row["attr"], every=every,
                               image_classifier_dir=classifier)
        row.update(measured(result, row["scale"]))
        with rows_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{row['clip']} {row['attr']} {row['editor']} {row['scale']}: target change "
              f"{row['target_change']}", flush=True)


def print_tables(rows: list[dict], reference: str | None = None) -> None:
    """The rows by editor and scale, by attribute too, and with several scales at equal target
    change against `reference` (default: the first row's editor)."""
    editors = list(dict.fromkeys(r["editor"] for r in rows))
    if not editors:
        raise SystemExit("error: no rows to print")
    if reference and reference not in editors:
        raise SystemExit(f"error: no rows of editor {reference!r}; the rows have: "
                         f"{', '.join(editors)}")
    print(table(rows, ("editor", "scale")))
    print()
    print(table(rows, ("attr", "editor", "scale")))
    reference = reference or rows[0]["editor"]
    if len({r["scale"] for r in rows}) > 1:
        print(f"\nat the target changes of {reference}:\n")
        print(at_equal_target(rows, reference))


if __name__ == "__main__":
    main()
