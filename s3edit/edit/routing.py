"""Semantic disentangled routing: attributes that mean similar things share a transform.

The semantic embedding of an attribute is its classifier direction (a unit vector in normalised
code space). Spherical K-means groups the directions of the attributes seen in training; each
cluster gets its own transform, so edits of unrelated attributes do not compete for the same
weights. An attribute unseen in training goes to the cluster whose centroid is nearest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nearest_centroid(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the most cosine-similar centroid (K, d) of each point (N, d)."""
    return (F.normalize(points, dim=-1) @ F.normalize(centroids, dim=-1).T).argmax(-1)


def kmeans(points: torch.Tensor, k: int, iters: int = 100, seed: int = 0
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Spherical K-means of unit vectors (N, d): unit centroids (k, d) and assignments (N,).

    Deterministic for a given seed: k-means++ seeding draws from a private generator.
    """
    points = F.normalize(points.detach().float(), dim=-1)
    n = len(points)
    if not 1 <= k <= n:
        raise ValueError(f"cannot make {k} clusters of {n} points")
    gen = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(n, (1,), generator=gen))]
    for _ in range(1, k):
        # Cosine distance to the nearest chosen centre, squared: k-means++'s sampling weight.
        dist = (1 - points @ points[chosen].T).amin(1).clamp(min=0) ** 2
        weights = dist if dist.sum() > 0 else torch.ones(n)
        chosen.append(int(torch.multinomial(weights, 1, generator=gen)))
    centroids = points[chosen].clone()
    assign = nearest_centroid(points, centroids)
    for _ in range(iters):
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        empty = (torch.bincount(assign, minlength=k) == 0).nonzero().flatten()
        # Emptied clusters restart at the points worst served by their centroids.
        worst = (points * centroids[assign]).sum(1).argsort()[:len(empty)]
        sums[empty] = points[worst]
        centroids = F.normalize(sums, dim=-1)
        new = nearest_centroid(points, centroids)
        if torch.equal(new, assign):
            break
        assign = new
    return centroids, assign


def route_attributes(directions: torch.Tensor, seen: torch.Tensor, k: int, seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster the seen attributes' directions (A, d); every attribute's cluster (A,) and the
    centroids (k, d). Unseen ones (`seen` False) go to their nearest centroid."""
    centroids, assign = kmeans(directions[seen], k, seed=seed)
    clusters = nearest_centroid(directions, centroids)
    clusters[seen] = assign
    return clusters, centroids
