"""Data parallelism for the training loops. Under `torchrun` or `accelerate launch` every
process trains the same model on its slice of each step's batch and DDP averages the
gradients; the main process alone writes logs and weights. Alone, a process trains as usual."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from s3edit.weights import resolve_device

if TYPE_CHECKING:
    from accelerate import Accelerator


@contextmanager
def launched_accelerator(device: str) -> Iterator[Accelerator]:
    """The Accelerator of the processes the launcher started (or of this one alone), its
    process group destroyed at the end, so that exiting does not abort."""
    from accelerate import Accelerator

    # Accelerate spreads over CPU processes only when asked for the CPU: --device auto on a
    # machine without a GPU must ask too.
    accelerator = Accelerator(cpu=resolve_device(device).type == "cpu")
    try:
        yield accelerator
        accelerator.wait_for_everyone()  # the main process's last files are written
    finally:
        # Not after a failure's barrier: the others may be stuck in a collective, and the
        # launcher ends them once this process has exited.
        accelerator.end_training()


def my_share(accelerator: Accelerator, batch_size: int) -> slice:
    """This process's slice of a global batch of `batch_size` per process."""
    start = accelerator.process_index * batch_size
    return slice(start, start + batch_size)


def average_gradients(accelerator: Accelerator | None, model: torch.nn.Module) -> None:
    """Replace every gradient by its mean over the processes, as DDP's all-reduce does: for
    the editors' loops, whose loss is not the forward of one module. One process: nothing."""
    if accelerator is None or accelerator.num_processes == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")
    for g, mean in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        g.copy_(mean.view_as(g))


def global_batch_share(accelerator: Accelerator | None, batch_size: int) -> tuple[int, slice]:
    """(global batch size, this process's slice of it) for `batch_size` per process; alone,
    the whole batch."""
    if accelerator is None:
        return batch_size, slice(0, batch_size)
    return accelerator.num_processes * batch_size, my_share(accelerator, batch_size)


def is_main(accelerator: Accelerator | None) -> bool:
    """Whether this process writes: the main one, or the only one."""
    return accelerator is None or accelerator.is_main_process


@contextmanager
def main_process_first(accelerator: Accelerator | None) -> Iterator[None]:
    """The main process runs the block first (it fills the caches the others then read)."""
    if accelerator is None:
        yield
        return
    with accelerator.main_process_first():
        yield
