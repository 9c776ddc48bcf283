#!/usr/bin/env bash
# Make the working tree light enough for a GPU lease to carry a large training pack, and put it
# back afterwards (README: "Training on a lent GPU").
#   bash scripts/gpu_tree.sh slim      weights/autoencoder in bf16 (what gpu_train.py starts from),
#                                      the other weights and the docs' pictures emptied (the
#                                      trainer reads none of them)
#   bash scripts/gpu_tree.sh restore   the committed weights and pictures back (git checkout)
# A lease sends every tracked file as it is in the tree, and 64 MiB in all with its carry
# paths: the committed weights alone are 55 MB of that, the bf16 autoencoder 21 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
limit=$((64 * 1024 * 1024))

travel_bytes() {  # tracked and untracked-not-ignored files as they are now, plus .whl and .pack
    { git ls-files -z; git ls-files -z --others --exclude-standard; } \
        | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}'
    { du -sb .whl .pack 2>/dev/null || true; } | awk '{s += $1} END {print s + 0}'
}

case "${1:-}" in
slim)
    if ! git diff --quiet -- weights docs; then
        echo "gpu_tree: weights/ or docs/ has changes of its own; commit or restore them first" >&2
        exit 1
    fi
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    "$python" - "$tmp" <<'PY'
import sys
from pathlib import Path

from s3edit.train.pack import save_bf16

save_bf16(Path("weights/autoencoder"), Path(sys.argv[1]), max_shard_size="1GB")
PY
    cp "$tmp/diffusion_pytorch_model.safetensors" weights/autoencoder/
    git ls-files weights | grep '\.safetensors$' | grep -v '^weights/autoencoder/' \
        | while read -r f; do : > "$f"; done
    git ls-files docs | grep -E '\.(png|jpg)$' | while read -r f; do : > "$f"; done
    ;;
restore)
    git checkout -- weights docs
    ;;
*)
    echo "usage: bash scripts/gpu_tree.sh slim|restore" >&2
    exit 2
    ;;
esac
total=$(travel_bytes | awk '{s += $1} END {print s}')
echo "a lease would carry $((total / 1000)) kB with .whl and .pack (limit $((limit / 1000)) kB)"
if [ "${1}" = slim ] && [ "$total" -gt "$limit" ]; then
    echo "gpu_tree: over the limit: pack fewer faces (--limit) or at a lower --quality" >&2
    exit 1
fi
