"""Training checkpoints in safetensors only: model and EMA folders, optimizer moments, step."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def save_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Flatten an optimizer's per-parameter state into safetensors; hyper-parameters go to JSON."""
    state = optimizer.state_dict()
    tensors = {f"{i}.{k}": v.detach().clone().contiguous()
               for i, s in state["state"].items() for k, v in s.items()
               if isinstance(v, torch.Tensor)}
    groups = json.dumps(state["param_groups"])
    save_file(tensors, str(path), metadata={"param_groups": groups})


def load_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    from safetensors import safe_open

    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        groups = json.loads(f.metadata()["param_groups"])
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def replace_dir(tmp: Path, final: Path) -> None:
    """Swap a fully written folder into place, so a crash never leaves half a checkpoint."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
