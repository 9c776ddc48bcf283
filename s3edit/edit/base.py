"""What every editor offers the pipeline: move the clip code towards an attribute."""

from __future__ import annotations

from typing import Protocol

import torch


class Editor(Protocol):
    name: str

    def edit(self, identity: torch.Tensor, attr: str, scale: float) -> torch.Tensor:
        """identity (D,) clip code (`s3edit.model.codes`: the L2-normalised identity, then
        any attribute values) -> edited code of the same form; scale 0 is a no-op."""
        ...


class BatchEditor:
    """Editors defined on batches (codes, attribute indices, scales): `edit` is one code's case.

    Subclasses set `classifier` (for attribute indices) and implement `edit_batch`.
    """

    def edit_batch(self, z: torch.Tensor, attr: torch.Tensor, scale: torch.Tensor
                   ) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def edit(self, identity: torch.Tensor, attr: str, scale: float) -> torch.Tensor:
        """identity (..., D) clip codes; scale 0 returns them exactly."""
        if scale == 0:
            return identity
        z = identity.reshape(-1, identity.shape[-1])
        index = torch.full((len(z),), self.classifier.index(attr), dtype=torch.long)
        scales = torch.full((len(z),), float(scale))
        return self.edit_batch(z, index, scales).reshape(identity.shape)
