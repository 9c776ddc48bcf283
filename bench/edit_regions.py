"""Where an edit's change lands on decoded faces, by the region of the code it writes (issue 16:
can region-structured sparsity make an edit local?).

Held-out CelebA-HQ faces are DDIM-inverted (apply's 10 steps, refinement 3). Each editor edits
their clip codes (apply's value limits included) and the edit is decoded from the faces' own
noise maps; then again with the edit's writes into one code region dropped (the identity part,
or the attribute values of the eyes, mouth, face or hair; the target's own value is always
kept, as region groups keep it), and once with the target's value written alone. Each decode
is compared with the unedited decode through apply's paste mask (the face oval, plus the hair
for hair attributes), as `s3edit eval` compares frames: locality is the share of the pasted
change inside the attribute's region; "outside" the mean change per pasted pixel outside it
(0-255 levels). Target and off-target changes are the attribute encoder's (the training judge,
not `s3edit eval`'s grader); identity is dlib's cosine to the unedited decode. Printed as mean
± sd over faces, each variant also paired against the full edit.

    python bench/edit_regions.py --faces 24 --editor s3 --editor linear --editor lt
"""

from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")  # before mediapipe loads: hush its C++ logs
import s3edit  # noqa: E402, F401  (torch's thread wait policy, before torch loads)

# isort: split

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import decoded_face_judge, default_data_dir, inverted_celeba, load_editor_spec

from s3edit.edit.attributes import ATTRIBUTES
from s3edit.edit.expression import within_value_limits
from s3edit.edit.s3 import CODE_REGIONS, code_regions
from s3edit.model.codes import IDENTITY_DIM, renormalise_clip_code
from s3edit.train.decoded_faces import (
    DecodedFaceJudge,
    InvertedFaces,
    edit_masks,
    pasted_change,
)
from s3edit.weights import REPO_WEIGHTS

MEASURES = ("locality", "outside", "target", "off_target", "identity")


def edit_variants(code: torch.Tensor, edited: torch.Tensor, attr: str) -> dict[str, torch.Tensor]:
    """The edit (N, D), the edit without its writes into each code region (the target's own
    value kept), and the target's value written alone."""
    target = IDENTITY_DIM + ATTRIBUTES.index(attr)
    region = code_regions()
    delta = edited - code
    variants = {"full": edited}
    for r, name in enumerate(CODE_REGIONS):
        keep = (region != r).float()
        keep[target] = 1
        variants[f"without {name}"] = within_value_limits(
            renormalise_clip_code(code + delta * keep), attr)
    alone = torch.zeros(code.shape[1])
    alone[target] = 1
    variants["target alone"] = code + delta * alone
    return variants


@torch.no_grad()
def measure(judge: DecodedFaceJudge, faces: InvertedFaces, codes: torch.Tensor,
            unedited: torch.Tensor, attr: str, inside: torch.Tensor, paste: torch.Tensor
            ) -> dict[str, np.ndarray]:
    """Per face: locality, change outside the region, target and off-target change,
    identity of the decode of `codes` against the unedited decode."""
    images = judge.decode(faces, codes)
    locality, outside = pasted_change(images, unedited, inside, paste)
    identity = F.cosine_similarity(judge.embeddings(images, faces.chip_maps), faces.embeddings,
                                   dim=-1)
    moved = judge.probabilities(images) - faces.probabilities
    i = ATTRIBUTES.index(attr)
    others = torch.cat([moved[:, :i], moved[:, i + 1:]], 1).abs().mean(1)
    return {k: v.float().numpy() for k, v in zip(
        MEASURES, (locality, outside, moved[:, i], others, identity), strict=True)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=REPO_WEIGHTS)
    p.add_argument("--data", type=Path, default=default_data_dir() / "CelebAMask-HQ-128")
    p.add_argument("--faces", type=int, default=24, help="held-out faces")
    p.add_argument("--editor", dest="editors", action="append",
                   help="LABEL=NAME[:FOLDER] as in editor_ablation.py (default: s3, linear, lt)")
    p.add_argument("--edit", dest="edits", action="append",
                   help="ATTR:SCALE (default: Eyeglasses:0.6, Blond_Hair:0.6, Young:-1.5)")
    p.add_argument("--out", type=Path, help="write the per-face measures as JSON")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

    judge = decoded_face_judge(args.weights, decode_steps=10)
    start = time.perf_counter()
    faces = inverted_celeba(judge, args.data, args.faces)
    unedited = judge.decode(faces, faces.codes)
    editors = [load_editor_spec(s, args.weights) for s in args.editors or ["s3", "linear", "lt"]]
    edits = [(a, float(s)) for a, s in (e.split(":") for e in args.edits
                                         or ["Eyeglasses:0.6", "Blond_Hair:0.6", "Young:-1.5"])]

    results = []
    for attr, scale in edits:
        inside, paste = edit_masks(faces, [attr] * len(faces))
        for label, editor in editors:
            edited = within_value_limits(editor.edit(faces.codes, attr, scale), attr)
            for variant, codes in edit_variants(faces.codes, edited, attr).items():
                m = measure(judge, faces, codes, unedited, attr, inside, paste)
                results.append({"attr": attr, "scale": scale, "editor": label,
                                "variant": variant, **{k: v.tolist() for k, v in m.items()}})
    print(f"{len(faces)} faces, {len(results)} decodes of them in "
          f"{time.perf_counter() - start:.0f} s\n")
    if args.out:
        args.out.write_text(json.dumps(results))

    print("| edit | editor | variant | " + " | ".join(MEASURES) + " | locality - full's |")
    print("|---|---|---|" + "---|" * (len(MEASURES) + 1))
    full = {(r["attr"], r["editor"]): np.array(r["locality"]) for r in results
            if r["variant"] == "full"}
    for r in results:
        cells = [f"{np.mean(r[k]):.3f} ± {np.std(r[k]):.3f}" for k in MEASURES]
        paired = np.array(r["locality"]) - full[r["attr"], r["editor"]]
        delta = ("" if r["variant"] == "full"
                 else f"{paired.mean():+.3f} ± {paired.std():.3f}")
        print(f"| {r['attr']} {r['scale']:+g} | {r['editor']} | {r['variant']} | "
              + " | ".join(cells) + f" | {delta} |")


if __name__ == "__main__":
    main()
