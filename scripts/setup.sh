#!/usr/bin/env bash
# Create .venv with s3edit and its test tools. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v ffprobe >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing ffmpeg (ffprobe gives exact frame rates)" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg) \
            >/dev/null 2>&1 || echo "setup: apt-get failed; using imageio-ffmpeg's ffmpeg" >&2
    else
        echo "setup: no ffprobe on PATH; s3edit will use imageio-ffmpeg's ffmpeg" >&2
    fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# The CPU build of torch where the machine has one cached (pip would otherwise pick a CUDA
# build of several GB); anywhere else pip resolves torch from pyproject.toml as usual.
.venv/bin/pip install -q "torch==2.13.0" >/dev/null 2>&1 || true
.venv/bin/pip install -q -e ".[test]"
