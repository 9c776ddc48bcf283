"""Peak memory of `s3edit apply` on a short and a long clip: it should not grow with length.

    python bench/memory.py                       # face path only (--no-model)
    python bench/memory.py --model="--steps 5"   # with the autoencoder and these apply args

Each clip runs `python -m s3edit apply CLIP ... --attr eyeglasses --scale 0 -q` in a child
process of its own. Its peak RSS comes from wait4() on that child alone: the largest resident
set of any single process of its tree (the Python process; ffmpeg's are smaller), so runs do
not mix. The summed memory of the whole tree (Python plus its ffmpeg decoder and encoder, as
PSS) is sampled every 0.1 s alongside. Exits 1 if the long clip's peak RSS is over --max-ratio
times the short clip's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import default_data_dir, resolve_video

from s3edit.video import probe

SHORT = "videoretalking/examples/face/2.mp4"  # 5 s, 25 fps, 844x844
LONG = "liveportrait/driving/d6.mp4"  # 34 s, 30 fps, 480x480




@dataclass
class Run:
    clip: Path
    duration: float
    frames: int
    peak_mb: float  # largest single process, from wait4
    tree_mb: float  # sampled PSS sum over the process tree
    seconds: float


def _pss_kb(pid: int) -> int:
    """Proportional set size: shared pages split among their users, so a tree's sum counts
    the libraries that Python and a just-forked child share once (RSS would count them twice)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        found = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
    except OSError:  # gone between listing and reading, or no smaps_rollup (Linux < 4.14)
        return 0
    return int(found[1]) if found else 0


def _tree(pid: int) -> list[int]:
    """pid and all its descendants, via /proc/PID/task/TID/children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def measure(clip: Path, extra: list[str], workdir: Path) -> Run:
    info = probe(clip)
    cmd = [sys.executable, "-m", "s3edit", "apply", str(clip), "-o", str(workdir / "out.mp4"),
           "--attr", "eyeglasses", "--scale", "0", "-q", "--json", "--overwrite", *extra]
    env = {**os.environ, "GLOG_minloglevel": "2"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        tree_kb = 0
        while True:
            # wait4, not Popen.poll: reaping through it is what returns this child's rusage.
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            tree_kb = max(tree_kb, sum(_pss_kb(p) for p in _tree(proc.pid)))
            time.sleep(0.1)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        sys.exit(f"error: {shlex.join(cmd)} exited {proc.returncode}\n{stdout}{stderr}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return Run(clip=clip, duration=info.duration, frames=int(result["frames"]),
               peak_mb=usage.ru_maxrss / 1024, tree_mb=tree_kb / 1024, seconds=seconds)


def _short_name(clip: Path, data: Path) -> str:
    try:
        return str(clip.resolve().relative_to((data / "videos").resolve()))
    except ValueError:
        return str(clip)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--short", default=SHORT, help="short clip: a path, or one under DATA/videos")
    p.add_argument("--long", default=LONG, help="long clip: a path, or one under DATA/videos")
    p.add_argument("--data", type=Path, default=default_data_dir(),
                   help="shared data folder (env S3EDIT_SHARED_DATA)")
    p.add_argument("--model", nargs="?", const="", default=None, metavar="ARGS",
                   help="run with the autoencoder instead of --no-model, passing ARGS to apply "
                        "(write --model=\"--steps 5 --device cpu\" when ARGS starts with --)")
    p.add_argument("--extra", default="", metavar="ARGS",
                   help="more apply args in either mode, e.g. --extra=\"--batch-size 4\"")
    p.add_argument("--max-ratio", type=float, default=1.3,
                   help="fail if long peak RSS / short peak RSS is above this")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    extra = (["--no-model"] if args.model is None else shlex.split(args.model))
    extra += shlex.split(args.extra)
    clips = [resolve_video(args.short, args.data), resolve_video(args.long, args.data)]
    print(f"apply args: {shlex.join(extra)}")
    runs = []
    with tempfile.TemporaryDirectory(prefix="s3edit-bench-") as tmp:
        for clip in clips:
            runs.append(measure(clip, extra, Path(tmp)))

    print()
    names = [_short_name(r.clip, args.data) for r in runs]
    name_w = max(len("clip"), *(len(n) for n in names))
    header = (f"{'clip':<{name_w}}{'duration s':>12}{'frames':>8}{'peak RSS MB':>13}"
              f"{'ratio':>7}{'tree MB':>9}{'wall s':>8}")
    print(header)
    print("-" * len(header))
    base = runs[0].peak_mb
    for name, r in zip(names, runs, strict=True):
        print(f"{name:<{name_w}}{r.duration:>12.1f}{r.frames:>8}{r.peak_mb:>13.0f}"
              f"{r.peak_mb / base:>7.2f}{r.tree_mb:>9.0f}{r.seconds:>8.1f}")
    print()
    ratio = runs[1].peak_mb / base
    verdict = "ok" if ratio <= args.max_ratio else "FAIL"
    print(f"long/short peak RSS ratio {ratio:.2f} (bar {args.max_ratio:g}): {verdict}")
    print("peak RSS: largest single process of each run (wait4); tree MB: peak of the summed PSS "
          "of the run's processes (Python + ffmpeg), sampled every 0.1 s")
    sys.exit(0 if ratio <= args.max_ratio else 1)


if __name__ == "__main__":
    main()
