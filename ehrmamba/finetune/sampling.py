"""Which training rows a finetuning epoch visits, for each balancing option.

Balancing decides how often each stratum is drawn: ``none`` pools every row as one stratum,
``tasks`` makes each task a stratum, ``tasks_and_labels`` each (task, label) pair; strata are
drawn equally often. Within a stratum, rows come from a shuffled permutation that is reshuffled
only when used up, so a stratum sees every one of its rows before any row twice. Drawing rows
with replacement instead (a weighted random sampler) leaves about a third of a stratum unseen in
an epoch of as many draws as it has rows; without balancing, an epoch here is exactly one pass.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

BALANCE_OPTIONS = ("none", "tasks", "tasks_and_labels")


def balance_strata(tasks: Sequence[str], labels: Sequence[float], balance: str) -> list[Hashable]:
    """The stratum of each row under a balancing option."""
    if balance not in BALANCE_OPTIONS:
        raise ValueError(f"balance must be one of {BALANCE_OPTIONS}, not {balance!r}")
    if balance == "none":
        return [None] * len(tasks)
    if balance == "tasks":
        return list(tasks)
    return list(zip(tasks, labels, strict=True))


class StratifiedCyclingSampler(Sampler[int]):
    """``num_samples`` row indices per epoch: a stratum drawn uniformly at random for each,
    then that stratum's next row in its current shuffled permutation.

    The permutations carry over from one epoch to the next, so over several epochs every row of
    a stratum is visited equally often, give or take one.
    """

    def __init__(
        self, strata: Sequence[Hashable], num_samples: int, generator: torch.Generator
    ) -> None:
        if len(strata) == 0:
            raise ValueError("no rows to sample from")
        keys = list(dict.fromkeys(strata))
        index = {k: i for i, k in enumerate(keys)}
        codes = np.array([index[s] for s in strata])
        self.members = [np.flatnonzero(codes == i) for i in range(len(keys))]
        self.num_samples = num_samples
        self.generator = generator
        self._queues = [np.empty(0, dtype=np.int64) for _ in keys]

    def __len__(self) -> int:
        return self.num_samples

    def _take(self, stratum: int, count: int) -> np.ndarray:
        """The next ``count`` rows of a stratum, reshuffling it each time it is used up."""
        queue = self._queues[stratum]
        rows = self.members[stratum]
        while len(queue) < count:
            order = torch.randperm(len(rows), generator=self.generator).numpy()
            queue = np.concatenate([queue, rows[order]])
        self._queues[stratum] = queue[count:]
        return queue[:count]

    def __iter__(self) -> Iterator[int]:
        n_strata = len(self.members)
        if n_strata == 1:
            choice = np.zeros(self.num_samples, dtype=np.int64)
        else:
            choice = torch.randint(n_strata, (self.num_samples,), generator=self.generator).numpy()
        out = np.empty(self.num_samples, dtype=np.int64)
        for stratum in range(n_strata):
            where = np.flatnonzero(choice == stratum)
            out[where] = self._take(stratum, len(where))
        return iter(out.tolist())
