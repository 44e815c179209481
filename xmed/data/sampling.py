"""Training order and augmentation drawn from (seed, epoch) alone, so a resumed run replays exactly.

A DataLoader's shuffling generator and an augmentation pipeline's random state both run on from
wherever the process started: a run resumed from ``last.ckpt`` would see epoch 3 shuffled like
epoch 0 and augmented differently from the run it continues. :class:`EpochSampler` draws each
epoch's order from ``(seed, epoch)`` and pairs every index with a seed for that sample's
augmentations (:class:`SeededIndex`), which :class:`~xmed.data.datamodule.SplitView` applies
before augmenting; the same in every loader worker, for any number of workers.

Example:
    >>> sampler = EpochSampler(5, seed=0)
    >>> sampler.set_epoch(1)
    >>> first = [int(i) for i in sampler]
    >>> sampler.set_epoch(1)
    >>> [int(i) for i in sampler] == first and sorted(first) == [0, 1, 2, 3, 4]
    True
"""

from __future__ import annotations

from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import DistributedSampler


class SeededIndex(NamedTuple):
    """A sample index and the seed of its augmentations in this epoch."""

    index: int
    seed: int

    def __int__(self) -> int:
        return self.index


class EpochSampler(DistributedSampler):
    """Training indices in an order drawn from ``(seed, epoch)``, each with its augmentation seed;
    ``set_epoch`` (Lightning calls it before every epoch) selects the epoch. Under data-parallel
    training each of ``num_replicas`` processes takes every ``num_replicas``-th index of the one
    order (padded to a multiple, as ``DistributedSampler``, whose place it takes, so Lightning does
    not wrap it).

    Args:
        n: the number of samples.
        seed: the run's seed.
        weights: per-sample weights to draw ``n`` samples with replacement (class-balanced
            sampling); None: a permutation of all samples.
        num_replicas, rank: the processes of a data-parallel run and this one's rank.
    """

    def __init__(self, n: int, seed: int, weights: Sequence[float] | None = None,
                 num_replicas: int = 1, rank: int = 0):
        super().__init__(range(n), num_replicas=num_replicas, rank=rank, shuffle=True, seed=int(seed))
        self.n = n
        self.weights = None
        if weights is not None:
            weights = np.asarray(weights, np.float64)
            self.weights = weights / weights.sum()

    def __iter__(self) -> Iterator[SeededIndex]:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.weights is None:
            order = rng.permutation(self.n)
        else:
            order = rng.choice(self.n, size=self.n, replace=True, p=self.weights)
        seeds = rng.integers(0, 2**32, size=self.n, dtype=np.uint64)
        picked = np.resize(np.arange(self.n), self.total_size)[self.rank:self.total_size:self.num_replicas]
        return (SeededIndex(int(order[j]), int(seeds[j])) for j in picked)


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> int:
    """Seed torch's global generator from ``(seed, epoch, rank)`` at the start of a training epoch,
    so dropout, stochastic depth and random attack starts draw the same in a resumed run as in an
    uninterrupted one (the generator's state is not in a checkpoint); returns the seed.

    Example:
        >>> a = seed_epoch(0, 3); x = torch.rand(2)
        >>> b = seed_epoch(0, 3); bool((x == torch.rand(2)).all()) and a == b
        True
    """
    value = int(np.random.SeedSequence([int(seed), int(epoch), int(rank)]).generate_state(1)[0])
    torch.manual_seed(value)
    return value
