#!/usr/bin/env bash
# Set up, fetch the sample clip, add eyeglasses with the default weights: out/demo.mp4.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A local mirror of the sample clips avoids the download (this is where they sit beside CI).
if [ -z "${S3EDIT_SAMPLES_DIR:-}" ] && [ -d ../shared/data/videos ]; then
    export S3EDIT_SAMPLES_DIR=../shared/data/videos
fi
clip=$(.venv/bin/s3edit samples fetch retalking-1)
mkdir -p out
# The default 10 DDIM steps (3 refinements per inversion step) take a few minutes on a CPU.
.venv/bin/s3edit apply "$clip" -o out/demo.mp4 --attr eyeglasses --scale 0.6 --overwrite
.venv/bin/s3edit preview "$clip" --frame 60 --attr eyeglasses --scale 0.6 \
    -o out/demo-preview.png --overwrite
