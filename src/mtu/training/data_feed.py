"""Feeds the trainer: data sources -> per-micro-step batches for this process, by `BatchPlan`."""

from __future__ import annotations

import warnings

import torch
from torch.utils.data import DataLoader, Dataset

from ..data import build_dataset, check_failure_rate, collate_examples, source_from_dict
from ..errors import InputError
from .cache import LatentCache, collate_cached
from .config import TrainConfig
from .sampling import BatchPlan


class _Slots(Dataset):
    """Items are (slot, source, index, epoch); the example gets its slot, which seeds its noise."""

    def __init__(self, datasets, cache: LatentCache | None = None):
        self.datasets, self.cache = datasets, cache

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, item):
        slot, source, index, epoch = item
        if self.cache is not None:
            example = self.cache.get(source, index, epoch, self.datasets[source].config.task)
        else:
            example = self.datasets[source].get(index, epoch)
        if example is not None:
            example["slot"] = slot
        return example


class _MicroSteps:
    """Batch sampler: this process's micro-batches of optimizer steps start, start+1, ..., stop-1."""

    def __init__(self, plan: BatchPlan, start: int, stop: int, process_index: int, num_processes: int,
                 accumulation: int, total: int):
        self.plan, self.start, self.stop, self.total = plan, start, stop, total
        self.process_index, self.num_processes, self.accumulation = process_index, num_processes, accumulation

    def __len__(self) -> int:
        return (self.stop - self.start) * self.accumulation

    def __iter__(self):
        chunks = self.num_processes * self.accumulation
        for step in range(self.start, self.stop):
            # Sampling is with replacement; an "epoch" is one dataset's worth of draws, for per-epoch choices.
            epoch = step * self.plan.global_batch // self.total
            for micro in range(self.accumulation):
                chunk = micro * self.num_processes + self.process_index
                yield [(slot, source, index, epoch) for slot, source, index in
                       self.plan.chunk_slots(step, chunk, chunks)]


def _collate(examples):
    batch = collate_examples(examples)
    if batch is not None:
        batch["slot"] = [example["slot"] for example in examples if example is not None]
    return batch


def _source(number: int, source):
    """A `data` entry as its typed config; an error names its place, e.g. `data[2].schema`."""
    try:
        return source_from_dict(source) if isinstance(source, dict) else source
    except InputError as error:
        raise error.within(f"data[{number}]") from None


def _open(number: int, source):
    """A source's dataset; a source that cannot be opened (a missing column, a shard cut short) names its place."""
    try:
        dataset = build_dataset(source)
    except InputError as error:
        raise error.within(f"data[{number}]") from None
    if dataset.problems:
        raise InputError(f"{'; '.join(dataset.problems)}. `mtu data validate` lists every defect; repair the "
                         f"source or leave the defective files out of `path`.", field=f"data[{number}]")
    return dataset


class DataFeed:
    """The run's data: sources, their tasks (the model's tasks, in order of first appearance), batches."""

    def __init__(self, config: TrainConfig, process_index: int, num_processes: int):
        self.config = config
        self.sources = [_source(number, source) for number, source in enumerate(config.data)]
        resolutions = sorted({source.resolution for source in self.sources})
        if len(resolutions) > 1:
            raise InputError(f"all sources must share one `resolution` (tasks are batched together), got "
                             f"{resolutions}.", field="data")
        self.resolution = resolutions[0]
        self.datasets = [_open(number, source) for number, source in enumerate(self.sources)]
        self.tasks = list(dict.fromkeys(source.task for source in self.sources))
        self.process_index, self.num_processes = process_index, num_processes
        self.cache = LatentCache(config.cache_dir, config) if config.cache_dir else None
        self.plan = BatchPlan([len(d) for d in self.datasets], [s.weight for s in self.sources],
                              [s.task for s in self.sources],
                              config.batch_size * num_processes * config.gradient_accumulation_steps, config.seed,
                              config.task_sampling)

    def batches(self, start_step: int, device):
        """This process's micro-batches (tensors on `device`) from optimizer step `start_step` on; None where
        every sample of a micro-batch was unreadable."""
        sampler = _MicroSteps(self.plan, start_step, self.config.max_steps, self.process_index, self.num_processes,
                              self.config.gradient_accumulation_steps, sum(len(d) for d in self.datasets))
        loader = DataLoader(_Slots(self.datasets, self.cache), batch_sampler=sampler,
                            collate_fn=collate_cached if self.cache is not None else _collate,
                            num_workers=self.config.num_workers)
        for batch in loader:
            for dataset in self.datasets:
                check_failure_rate(dataset)
            if batch is not None:
                batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            yield batch

    def state(self) -> dict:
        # Batches are a function of (seed, micro-step), so the step in the checkpoint is the sampler position.
        # Failure counts are kept per source, in `data` order (two toy sources may share a path), with their totals
        # since the run began, so that `max_failure_fraction` holds across resumes.
        return {"failures": [{"source": source.path, "failed": d.failures.count, "read": d.failures.attempts}
                             for source, d in zip(self.sources, self.datasets)]}

    def load_state(self, state: dict) -> None:
        """Carries the failure counts of the run before the resume into every source's log."""
        saved = state.get("failures", [])
        if isinstance(saved, dict):  # checkpoints before issue 13: {path: [failed, read]}
            saved = [{"source": path, "failed": counts[0], "read": counts[1]} for path, counts in saved.items()]
        if len(saved) != len(self.datasets) or any(entry["source"] != source.path
                                                   for entry, source in zip(saved, self.sources)):
            warnings.warn(f"the checkpoint's data sources {[entry['source'] for entry in saved]} are not this run's "
                          f"{[source.path for source in self.sources]}: failure counts start again from zero.",
                          stacklevel=2)
            return
        for entry, dataset in zip(saved, self.datasets):
            dataset.failures.carry(entry["failed"], entry["read"])

    def failure_summary(self) -> dict:
        return {source.path: {"failed": d.failures.count, "read": d.failures.attempts, "examples": d.failures.keys}
                for source, d in zip(self.sources, self.datasets)}
