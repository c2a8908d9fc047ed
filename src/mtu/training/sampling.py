"""Multi-task batches as a pure function of (seed, optimizer step): exact resume needs no sampler state.

Each optimizer step's global batch (batch size x processes x accumulation steps) is a list of slots (source,
sample index), the same however it is split: micro-step m of process r takes the contiguous chunk m * P + r.
So 2 processes, or 2 accumulation steps, see exactly the samples of one process with twice the batch size.
Sample indices are drawn with replacement.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


class BatchPlan:
    """Deterministic multi-task batch composition.

    Args:
        sizes: Number of samples in each source.
        weights: Mixing weight of each source.
        tasks: Task of each source.
        global_batch: Samples per optimizer step over all processes and accumulation steps.
        seed: Run seed.
        mode: "weighted": every slot's source drawn by weight (the sources' mixing ratios). "stratified": tasks
            take turns in a rotating cyclic order, so any run of T consecutive slots holds all T tasks and every
            process whose share has >= T slots sees every task; within a task, sources are drawn by weight.
    """

    def __init__(self, sizes: list[int], weights: list[float], tasks: list[str], global_batch: int, seed: int,
                 mode: str = "weighted"):
        if any(size < 1 for size in sizes):
            empty = [i for i, size in enumerate(sizes) if size < 1]
            raise InputError(f"data sources {empty} are empty; every source needs at least one sample.")
        if mode not in ("weighted", "stratified"):
            raise InputError(f"`task_sampling` must be 'weighted' or 'stratified', got {mode!r}.")
        self.sizes, self.tasks, self.seed, self.mode, self.global_batch = sizes, tasks, seed, mode, global_batch
        self.probabilities = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
        self.task_names = list(dict.fromkeys(tasks))

    def _source_of_task(self, rng: np.random.Generator, task: str) -> int:
        members = [i for i, t in enumerate(self.tasks) if t == task]
        probabilities = self.probabilities[members] / self.probabilities[members].sum()
        return int(rng.choice(members, p=probabilities))

    def global_slots(self, step: int) -> list[tuple[int, int]]:
        """[(source, sample index)] for every slot of the step's global batch."""
        rng = np.random.default_rng([self.seed, step, 0x6D7475])
        if self.mode == "weighted":
            sources = [int(s) for s in rng.choice(len(self.sizes), size=self.global_batch, p=self.probabilities)]
        else:
            offset = int(rng.integers(len(self.task_names)))
            order = [self.task_names[(slot + offset) % len(self.task_names)] for slot in range(self.global_batch)]
            sources = [self._source_of_task(rng, task) for task in order]
        return [(source, int(rng.integers(self.sizes[source]))) for source in sources]

    def chunk_slots(self, step: int, chunk: int, num_chunks: int) -> list[tuple[int, int, int]]:
        """[(global slot, source, sample index)] of one contiguous chunk (micro-step m, process r: m * P + r)."""
        share = self.global_batch // num_chunks
        slots = self.global_slots(step)
        return [(slot, *slots[slot]) for slot in range(chunk * share, (chunk + 1) * share)]
