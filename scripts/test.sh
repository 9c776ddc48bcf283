#!/usr/bin/env bash
# Set up and run the whole test suite (tests needing ../shared/data skip when it is absent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check s3edit tests bench scripts
GLOG_minloglevel=2 .venv/bin/python -m pytest -q "$@"
