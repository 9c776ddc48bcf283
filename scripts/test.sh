#!/usr/bin/env bash
# Set up and run the whole test suite (tests needing ../shared/data skip when it is absent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The optional face backends, so that their plumbing tests run (README: Optional face backends);
# --no-deps keeps their pins from replacing cv2 and torch. Without them those tests skip.
{ .venv/bin/pip install -q -e ".[backends]" &&
  .venv/bin/pip install -q --no-deps face-alignment==1.5.0 facexlib==0.3.0; } >/dev/null 2>&1 ||
    echo "test: the optional face backends did not install; their tests skip" >&2
.venv/bin/ruff check s3edit tests bench scripts
GLOG_minloglevel=2 .venv/bin/python -m pytest -q "$@"
