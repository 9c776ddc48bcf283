#!/usr/bin/env bash
# Build .whl/diffusers-VERSION-nopipelines.zip: the one package s3edit's trainer needs that a
# lent GPU machine lacks, for `carry` (README: "Training on a lent GPU"). The machine imports
# it straight from the zip (PYTHONPATH=.whl/<zip>). The pipelines are left out: the trainer
# never imports them, and they are two thirds of the wheel (6.4 MB -> 2.1 MB), while a call
# carries 64 MiB in all, the repository's tracked files included.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
version=$("$python" -c "import diffusers; print(diffusers.__version__)")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp -d "$tmp" "diffusers==$version"
mkdir -p .whl
zip=.whl/diffusers-$version-nopipelines.zip
"$python" - "$tmp"/diffusers-*.whl "$zip" <<'EOF'
import sys
import zipfile

wheel, out = sys.argv[1:]
skip = ("diffusers/pipelines/", "diffusers/modular_pipelines/")
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, 9) as dst:
    for item in src.infolist():
        if item.filename.startswith("diffusers/") and not item.filename.startswith(skip):
            dst.writestr(item, src.read(item))
EOF
ls -l "$zip"
