"""The editors' training under torchrun: 2 CPU processes, gloo backend.

Run as a script, this file is the torchrun worker of the first test.
"""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from conftest import cli_env
from helpers import celeba_subset
from safetensors.torch import load_file, save_file

from s3edit.edit.classifier import LatentAttributeClassifier, fit_classifier
from s3edit.train.config import LtTrainConfig, S3TrainConfig
from s3edit.train.editors import fit_lt, fit_s3
from s3edit.train.parallel import launched_accelerator

S3 = S3TrainConfig(clusters=2, sparsity=0.25, steps=8, batch=32, hidden=16, lr=3e-3)
LT = LtTrainConfig(steps=4, batch=32, lr=3e-3, classifier_steps=4, classifier_lr=1e-3)


def torchrun(*args: object, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", *map(str, args)]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300,
                         stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    return run


def synthetic_codes(folder: Path) -> tuple[torch.Tensor, torch.Tensor, LatentAttributeClassifier]:
    """Codes on a cap of the sphere with 40 noisy half-space labels, and their classifiers,
    saved to `folder` for the worker processes."""
    gen = torch.Generator().manual_seed(0)
    codes = F.normalize(F.normalize(torch.randn(128, generator=gen), dim=0)
                        + 0.15 * torch.randn(400, 128, generator=gen), dim=1)
    scores = (codes - codes.mean(0)) @ torch.randn(128, 40, generator=gen)
    labels = (scores + 0.2 * scores.std(0) * torch.randn(scores.shape, generator=gen) > 0).float()
    classifier = fit_classifier(codes, labels, steps=50)
    classifier.save_pretrained(folder / "classifier")
    save_file({"codes": codes, "labels": labels}, str(folder / "codes.safetensors"))
    return codes, labels, classifier


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def test_two_processes_train_the_editors_as_one_process_with_twice_the_batch(tmp_path):
    codes, labels, classifier = synthetic_codes(tmp_path)
    torchrun(__file__, tmp_path, env=dict(cli_env(), OMP_NUM_THREADS="1"))
    ranks = {name: [load_file(str(tmp_path / f"{name}-rank{r}.safetensors")) for r in range(2)]
             for name in ("s3", "lt")}
    for name, (a, b) in ranks.items():
        assert all(torch.equal(a[k], b[k]) for k in a), \
            f"{name}: the gradients were averaged, both processes hold the same weights"

    torch.manual_seed(0)
    single, _ = fit_s3(codes, classifier, replace(S3, batch=2 * S3.batch),
                       progress=False)
    assert not single.active.all(), "the sparsity schedule ran"
    for key, want in weights(single).items():
        torch.testing.assert_close(ranks["s3"][0][key], want, rtol=1e-4, atol=1e-5, msg=key)
    # The Latent Transformer balances its classes per process's batch (as the reference
    # balances per batch), so it matches a double batch only roughly; it did train.
    assert ranks["lt"][0]["weight"].abs().max() > 0


def test_torchrun_trains_the_editors_through_the_cli(shared_data, tmp_path):
    # 30 faces: the expression directions need a face with narrow eyes (the 29th).
    data = celeba_subset(shared_data / "CelebAMask-HQ-128", tmp_path / "celeba", count=30)
    out = tmp_path / "out"
    env = dict(cli_env(), OMP_NUM_THREADS="1", S3EDIT_CACHE=str(tmp_path / "cache"))
    run = torchrun("-m", "s3edit", "train", "editor", "--data", data, "--out", out,
                   "--editor", "s3", "--steps", 3, env=env)
    # One writer: the main process prints each folder once and writes its metrics.
    assert run.stdout.splitlines() == [str(out / n) for n in ("classifier", "expression", "s3")]
    metrics = json.loads((out / "s3" / "metrics.json").read_text())
    assert metrics["train_codes"] > 0 and metrics["settings"]["steps"] == 3
    assert not list(out.rglob("*.partial")) and not list(tmp_path.rglob("*.partial"))


def worker(folder: Path) -> None:
    """Train both editors under torchrun, each process saving its final weights."""
    rank = os.environ["RANK"]
    saved = load_file(str(folder / "codes.safetensors"))
    classifier = LatentAttributeClassifier.from_pretrained(folder / "classifier")
    with launched_accelerator("cpu") as accelerator:
        torch.manual_seed(0)
        s3, _ = fit_s3(saved["codes"], classifier, S3, progress=False, accelerator=accelerator)
        lt, _ = fit_lt(saved["codes"], saved["labels"], classifier, LT, progress=False,
                       accelerator=accelerator)
    save_file(weights(s3), str(folder / f"s3-rank{rank}.safetensors"))
    save_file(weights(lt), str(folder / f"lt-rank{rank}.safetensors"))


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
