"""Progress of the long stages (tracking, editing, measuring), reported through one hook type.

The library calls `progress(stage, total)` once a stage starts and the function it returns as
units get done; it never prints. `stage_progress` is the command line's hook.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

# Stage name, total units -> a function that advances that stage by n units.
ProgressHook = Callable[[str, int], Callable[[int], None]]


def no_progress(stage: str, total: int) -> Callable[[int], None]:
    return lambda n: None


@contextmanager
def stage_progress(console: Console, enabled: bool = True) -> Iterator[ProgressHook]:
    """Rich bars on a terminal, one line per stage start and end otherwise (logs stay short)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if not enabled:
        yield no_progress
        return
    if not console.is_terminal:
        def plain(stage: str, total: int) -> Callable[[int], None]:
            start, done = time.perf_counter(), [0]

            def advance(n: int) -> None:
                done[0] += n
                if done[0] - n < total <= done[0]:  # once, as the stage ends
                    took = time.perf_counter() - start
                    console.print(f"{stage}: {total} frames in {took:.1f} s", highlight=False)
            console.print(f"{stage}: {total} frames ...", highlight=False)
            return advance
        yield plain
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                  transient=False) as bar:
        def rich_stage(stage: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(stage, total=total)
            return lambda n: bar.advance(task, n)
        yield rich_stage


def training_bar(*columns: object, enabled: bool = True):
    """A rich progress bar on stderr, for the training loops: stdout keeps only what the
    commands print for scripts (the folders they wrote)."""
    from rich.console import Console
    from rich.progress import Progress

    return Progress(*columns, console=Console(stderr=True), disable=not enabled)
