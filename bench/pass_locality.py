"""Where one network pass puts an edit's change, against the whole decode (issue 16: is an
edit's spread over the face the UNet's answer to the new code, or the DDIM trajectory's?).

Held-out CelebA-HQ faces are DDIM-inverted (apply's 10 steps, refinement 3). Along each face's
unedited decode, every step's x0 is predicted twice from the same sample, under the unedited
code and under the edited one; the difference is read through apply's paste mask as
`bench/edit_regions.py` reads a decode (locality: the share inside the attribute's region;
outside: the mean change per pasted pixel outside it, 0-255 levels). The last row is the whole
decode of the edit from the inverted noise, as apply runs it. With --alone the edit writes the
target's value only.

    python bench/pass_locality.py --faces 12 --edit Eyeglasses:0.6 --alone
"""

from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")  # before mediapipe loads: hush its C++ logs
import s3edit  # noqa: E402, F401  (torch's thread wait policy, before torch loads)

# isort: split

import argparse
from pathlib import Path

import torch
from common import decoded_face_judge, default_data_dir, inverted_celeba, load_editor_spec

from s3edit.edit.attributes import ATTRIBUTES
from s3edit.edit.expression import within_value_limits
from s3edit.model.codes import IDENTITY_DIM
from s3edit.train.decoded_faces import edit_masks, pasted_change
from s3edit.weights import REPO_WEIGHTS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=REPO_WEIGHTS)
    p.add_argument("--data", type=Path, default=default_data_dir() / "CelebAMask-HQ-128")
    p.add_argument("--faces", type=int, default=12, help="held-out faces")
    p.add_argument("--editor", default="s3", help="LABEL=NAME[:FOLDER] as in editor_ablation.py")
    p.add_argument("--edit", default="Eyeglasses:0.6", help="ATTR:SCALE")
    p.add_argument("--alone", action="store_true", help="write the target's value only")
    p.add_argument("--steps", type=int, default=10, help="DDIM steps, as apply's default")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

    judge = decoded_face_judge(args.weights, decode_steps=args.steps)
    model = judge.model
    faces = inverted_celeba(judge, args.data, args.faces)
    attr, scale = args.edit.split(":")
    _, editor = load_editor_spec(args.editor, args.weights)
    edited = within_value_limits(editor.edit(faces.codes, attr, float(scale)), attr)
    if args.alone:
        target = IDENTITY_DIM + ATTRIBUTES.index(attr)
        alone = faces.codes.clone()
        alone[:, target] = edited[:, target]
        edited = alone
    inside, paste = edit_masks(faces, [attr] * len(faces))
    z_plain = model.z_face(faces.codes, faces.landmarks)
    z_edit = model.z_face(edited, faces.landmarks)

    print(f"{len(faces)} faces, {args.edit} by {args.editor}"
          + (" (target value alone)" if args.alone else "") + "\n")
    print("| pass | locality | outside |\n|---|---|---|")
    scheduler, _ = model.schedulers()
    scheduler.set_timesteps(args.steps)
    x = faces.noise
    with torch.no_grad():
        for t in scheduler.timesteps:
            tt = t.expand(len(x))
            plain = scheduler.step(model.predicted_noise(x, tt, z_plain, bf16=True), t, x)
            edit = scheduler.step(model.predicted_noise(x, tt, z_edit, bf16=True), t, x)
            locality, outside = pasted_change(edit.pred_original_sample.clamp(-1, 1),
                                              plain.pred_original_sample.clamp(-1, 1),
                                              inside, paste)
            print(f"| x0 at t = {int(t)} | {locality.mean():.3f} ± {locality.std():.3f} "
                  f"| {outside.mean():.2f} |")
            x = plain.prev_sample
        locality, outside = pasted_change(judge.decode(faces, edited),
                                          judge.decode(faces, faces.codes), inside, paste)
    print(f"| whole decode | {locality.mean():.3f} ± {locality.std():.3f} "
          f"| {outside.mean():.2f} |")


if __name__ == "__main__":
    main()
