"""What every command shares: the stderr console, the one-line error report with its exit code,
and the choices several commands offer."""

from __future__ import annotations

import os
import traceback
from enum import Enum

from rich.console import Console

from s3edit.errors import S3EditError
from s3edit.options import EDITORS

stderr = Console(stderr=True, soft_wrap=True)

EditorName = Enum("EditorName", {name: name for name in EDITORS}, type=str)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def fail(error: BaseException, verbose: bool) -> int:
    """Report an error in one line (with the traceback under -v) and give its exit code."""
    if isinstance(error, KeyboardInterrupt):
        stderr.print("interrupted", style="yellow", highlight=False)
        return 130
    if verbose:
        stderr.print(traceback.format_exc(), highlight=False, markup=False)
    if isinstance(error, S3EditError):
        stderr.print(f"error: {error}", style="red", highlight=False, markup=False)
        return error.exit_code
    stderr.print(f"error: {type(error).__name__}: {error}", style="red", highlight=False,
                 markup=False)
    return 1


def launched_process() -> tuple[int, int]:
    """This process's rank and the process count when torchrun or accelerate launch started
    it (they set RANK and WORLD_SIZE); (0, 1) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
