"""What every editor offers the pipeline: move the clip's identity code towards an attribute."""

from __future__ import annotations

from typing import Protocol

import torch


class Editor(Protocol):
    name: str

    def edit(self, identity: torch.Tensor, attr: str, scale: float) -> torch.Tensor:
        """identity (128,) L2-normalised -> edited code of the same form; scale 0 is a no-op."""
        ...
