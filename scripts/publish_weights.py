"""Copy a trained model folder into weights/ and record it in weights/manifest.json.

Only config JSON and safetensors are copied; the manifest gets each file's sha256 and size, and
the model's exact command, data and measured quality. Example:

    python scripts/publish_weights.py --source runs/editors/s3 --name editors/s3 \
        --command "s3edit train editor ..." --data "CelebAMask-HQ-128 images 0-15999" \
        --quality runs/editors/s3/metrics.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from s3edit.weights import REPO_WEIGHTS, publish


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, required=True, help="folder with config + weights")
    p.add_argument("--name", required=True, help="its place under weights/, e.g. editors/s3")
    p.add_argument("--command", required=True, help="the exact command that trained it")
    p.add_argument("--data", required=True, help="what it was trained and measured on")
    p.add_argument("--quality", type=Path, required=True, help="JSON file of measured figures")
    p.add_argument("--notes", default="")
    p.add_argument("--weights", type=Path, default=REPO_WEIGHTS)
    args = p.parse_args()
    publish(args.source, args.weights, args.name, command=args.command, data=args.data,
            quality=json.loads(args.quality.read_text()), notes=args.notes)
    print(args.weights / args.name)


if __name__ == "__main__":
    main()
