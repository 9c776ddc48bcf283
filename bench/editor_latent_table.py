"""The editors' own held-out figures side by side, from the metrics.json that
`s3edit train editor` writes next to each trained transform.

    python bench/editor_latent_table.py weights/editors/s3 "K=2=runs/ablation/k2/s3" ...

Each argument is FOLDER or LABEL=FOLDER. The figures are in code space (graded by the latent
classifiers on held-out CelebA-HQ codes, at the scale metrics.json records): the target's
probability change, the mean |change| of the other attributes' and the cosine of the edited
code to the original; the rows of `linear` (and `lt`) come from the first folder that has them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = (("target_prob_change", "target"), ("others_prob_change", "off-target"),
           ("identity_cosine", "code cosine"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", help="FOLDER or LABEL=FOLDER with a metrics.json")
    args = p.parse_args()
    rows: dict[str, tuple[dict, dict]] = {}  # label -> (settings, per-attribute figures)
    for spec in args.folders:
        label, _, folder = spec.rpartition("=")
        metrics = json.loads((Path(folder) / "metrics.json").read_text())
        settings = metrics.get("settings", {})
        for name, figures in metrics["held_out"].items():
            if name in ("linear", "lt"):
                rows.setdefault(name, ({}, figures))
            else:
                settings = {**settings, "achieved": metrics.get("group_sparsity")}
                rows[label or folder] = (settings, figures)
    attrs = [a for a in next(iter(rows.values()))[1] if a != "mean"] + ["mean"]
    head = ["editor", "K", "sparsity (target/achieved)", "self-training", "held-out attrs"]
    head += [f"{a} {title}" for a in attrs for _, title in COLUMNS]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, (settings, figures) in rows.items():
        cells = [label, str(settings.get("clusters", "-"))]
        if "sparsity_target" in settings:
            cells.append(f"{settings['sparsity_target']:g} / {settings['achieved']:.2f}")
        else:
            cells.append("-")
        cells.append(str(settings.get("self_training", "-")))
        cells.append(", ".join(settings.get("holdout_attrs", [])) or "-")
        for attr in attrs:
            row = figures.get(attr, {})
            cells += [f"{row[key]:.3f}" if key in row else "-" for key, _ in COLUMNS]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
