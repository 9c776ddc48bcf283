"""Data parallelism for the training loops. Under `torchrun` or `accelerate launch` every
process trains the same model on its slice of each step's batch and DDP averages the
gradients; the main process alone writes logs and weights. Alone, a process trains as usual."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

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
