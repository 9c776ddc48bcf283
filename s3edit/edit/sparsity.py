"""Structured sparsity: whole groups of parameters switched off during training.

A group is a block of hidden neurons of one transform (their incoming weights and biases and
their outgoing weights), or what one transform writes into one region of the code
(`S3Transform`'s region groups). A parameter takes part through an index tensor of its shape
that names each element's group (-1: none); a parameter can belong to two families (a middle
layer's weights are the outgoing weights of one layer's neurons and the incoming weights of the
next).

`GroupSparseOptimizer` wraps an ordinary optimizer in the manner of HESSO (OTOv3): over a
number of periods it marks groups as redundant until the target fraction is marked (those of
smallest norm, or of highest score when given a score: say, the change they cause where an edit
should leave the face alone); during its period a redundant group is shrunk linearly to zero
(so the other groups can take over its work while it fades) and projected to zero at once if a
step carries it across the half-space {x : <x, x_marked> > 0}; at the end of the period it is
zeroed and deactivated.
The activity mask lives in a buffer of the model, so it is saved with the weights, and
deactivated groups are re-zeroed after every step so they stay exactly zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

Member = tuple[nn.Parameter, torch.Tensor]  # a parameter and the group id of each element
GroupScores = Callable[[], torch.Tensor]  # (groups,) higher: switched off first


def neuron_block_index(shape: tuple[int, ...], neuron_dim: int, group_size: int,
                       offset: int = 0) -> torch.Tensor:
    """Group ids for a weight stacked over transforms (dim 0): along `neuron_dim`, blocks of
    `group_size` neurons of each transform form one group, numbered from `offset`."""
    count, neurons = shape[0], shape[neuron_dim]
    if neurons % group_size:
        raise ValueError(f"{neurons} neurons do not split into groups of {group_size}")
    stack = torch.arange(count).view(-1, *[1] * (len(shape) - 1))
    neuron = torch.arange(neurons).view([-1 if i == neuron_dim else 1 for i in range(len(shape))])
    return (offset + stack * (neurons // group_size) + neuron // group_size).expand(shape)


class GroupSparseOptimizer:
    """`step()` = the inner optimizer's step, then the sparsity schedule and projection.

    active: the model's (groups,) bool buffer, updated in place. The target number of zero
    groups, round(target * groups), is reached in `periods` equal periods between steps
    `start` and `stop`. A schedule too short for them (a run of a few steps) gets fewer
    periods, one step each, and at least one: `stop` is moved to `start + 1` if need be.
    `scores`, if given, ranks the groups at each marking instead of their norms.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, members: list[Member],
                 active: torch.Tensor, target: float, start: int, stop: int, periods: int = 5,
                 scores: GroupScores | None = None):
        if not 0 <= target < 1:
            raise ValueError(f"group sparsity target {target} is not in [0, 1)")
        if start < 0:
            raise ValueError(f"the sparsity schedule cannot start at step {start}")
        stop = max(stop, start + 1)
        periods = max(1, min(periods, stop - start))
        self.optimizer = optimizer
        self.groups = len(active)
        # Elements of no group (-1) go to one extra slot, which is never marked.
        self.members = [(p, torch.where(index < 0, self.groups, index)) for p, index in members]
        self.active = active
        self.scores = scores
        self.goal = round(target * self.groups)
        self.periods = periods
        self.bounds = [start + round(i * (stop - start) / periods) for i in range(periods + 1)]
        sizes = torch.zeros(self.groups + 1)
        for p, index in self.members:
            sizes.index_add_(0, index.reshape(-1), torch.ones(p.numel()))
        self.sizes = sizes[:-1].clamp(min=1)
        self.redundant = torch.zeros(self.groups, dtype=torch.bool)
        self.marked: list[torch.Tensor] = []  # each member's values when its groups were marked
        self.t = 0
        if start == 0:  # `step` marks after its step, so the first period is marked now
            self._mark(1)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def group_norms(self) -> torch.Tensor:
        sq = torch.zeros(self.groups + 1)
        for p, index in self.members:
            sq.index_add_(0, index.reshape(-1), p.detach().reshape(-1).float() ** 2)
        return sq[:-1].sqrt()

    @property
    def sparsity(self) -> float:
        """Fraction of groups deactivated."""
        return float((~self.active).float().mean())

    @torch.no_grad()
    def step(self) -> None:
        self.optimizer.step()
        self.t += 1
        if self.t in self.bounds[1:]:
            # End of a period: its redundant groups go to exactly zero, for good.
            self.active &= ~self.redundant
            self.redundant.zero_()
        if self.t in self.bounds[:-1]:
            self._mark(self.bounds.index(self.t) + 1)
        if self.redundant.any():
            self._shrink()
        self._scale(self.active.float())

    def _mark(self, period: int) -> None:
        want = math.ceil(self.goal * period / self.periods) - int((~self.active).sum())
        if want <= 0:
            return
        # Without scores, the smallest per-element RMS first (fair across group sizes).
        scores = (self.scores() if self.scores is not None
                  else -self.group_norms() / self.sizes.sqrt()).float().clone()
        scores[~self.active] = -math.inf
        self.redundant[scores.argsort(descending=True)[:want]] = True
        self.marked = [p.detach().clone() for p, _ in self.members]

    def _shrink(self) -> None:
        left = max(next(b for b in self.bounds if b > self.t) - self.t, 1)
        factor = torch.ones(self.groups)
        factor[self.redundant] = (left - 1) / left
        # Half-space projection: a group whose step took it past the origin relative to where
        # it was marked is set to zero now.
        dot = torch.zeros(self.groups + 1)
        for (p, index), ref in zip(self.members, self.marked, strict=True):
            dot.index_add_(0, index.reshape(-1), (p.detach() * ref).reshape(-1))
        factor[self.redundant & (dot[:-1] <= 0)] = 0
        self._scale(factor)

    def _scale(self, factor: torch.Tensor) -> None:
        factor = torch.cat([factor, torch.ones(1)])  # the slot of no group stays as it is
        for p, index in self.members:
            p.mul_(factor[index].to(p.dtype))
