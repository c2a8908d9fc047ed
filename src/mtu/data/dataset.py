"""`SourceDataset`: a map-style dataset of example dicts from one `DataSourceConfig`, with failure accounting.

Random choices (which caption, which of several targets, the SR degradation) are drawn from a generator seeded
by (config seed, epoch, index), so item i of epoch e is the same whenever it is read: the trainer can resume at
a sampler position and get the very samples it would have seen.
"""

from __future__ import annotations

import json
import struct
import tarfile
import zlib

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, get_worker_info

from ..upcycling.tasks import get_task
from .config import DataSourceConfig
from .examples import make_example
from .imaging import open_image
from .schemas import get_schema, resolve_columns
from .sources import open_reader

# What a bad sample raises (unreadable or truncated files, bad JSON, missing or mistyped cells). Anything else
# is a bug and propagates.
DATA_ERRORS = (OSError, ValueError, SyntaxError, TypeError, KeyError, IndexError, EOFError, tarfile.TarError,
               Image.DecompressionBombError, zlib.error, struct.error)


class FailureLog:
    """Counts read attempts and failures of one dataset, including those made in DataLoader workers.

    Counters live in shared-memory tensors, one row per worker (row 0 for the main process), so that the copies
    of the dataset in worker processes write where the main process reads, without locks.

    Args:
        max_examples: Failures whose key and error are kept, per process.
        slots: Rows of the counters; worker ids beyond `slots - 1` share rows (counts may then race).
    """

    RECORD_BYTES = 512

    def __init__(self, max_examples: int = 10, slots: int = 65):
        self.max_examples = max_examples
        self._counts = torch.zeros(slots, 2, dtype=torch.int64).share_memory_()  # (slot, [attempts, failures])
        self._records = torch.zeros(slots, max_examples, self.RECORD_BYTES, dtype=torch.uint8).share_memory_()

    def _slot(self) -> int:
        info = get_worker_info()
        return 0 if info is None else 1 + info.id % (self._counts.shape[0] - 1)

    def attempt(self) -> None:
        self._counts[self._slot(), 0] += 1

    def record(self, key: str, error: BaseException) -> None:
        slot = self._slot()
        failures = int(self._counts[slot, 1])
        self._counts[slot, 1] += 1
        if failures < self.max_examples:
            text = json.dumps([key, f"{type(error).__name__}: {error}"])
            data = text.encode("utf-8")[: self.RECORD_BYTES - 1]
            self._records[slot, failures, : len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)

    @property
    def attempts(self) -> int:
        return int(self._counts[:, 0].sum())

    @property
    def count(self) -> int:
        return int(self._counts[:, 1].sum())

    @property
    def examples(self) -> list[tuple[str, str]]:
        """(key, error message) of the first failures of each process, at most `max_examples` in all."""
        found = []
        for slot in range(self._counts.shape[0]):
            for row in range(min(int(self._counts[slot, 1]), self.max_examples)):
                data = bytes(self._records[slot, row].tolist()).rstrip(b"\0").decode("utf-8", errors="ignore")
                try:
                    key, message = json.loads(data)
                except ValueError:  # cut at RECORD_BYTES: keep what is there
                    key, message = data[:80], data
                found.append((key, message))
        return found[: self.max_examples]

    @property
    def keys(self) -> list[str]:
        return [key for key, _ in self.examples]

    def reset(self) -> None:
        self._counts.zero_()
        self._records.zero_()

    def __repr__(self) -> str:
        return f"FailureLog(count={self.count}, attempts={self.attempts}, keys={self.keys})"


class ExampleDataset(Dataset):
    """What every source shares: its current epoch (in shared memory, so `set_epoch` in the main process reaches
    persistent DataLoader workers), its `failures` log, and `get(index, epoch)`, which turns an unreadable sample
    into None and a log entry. Subclasses set `config`, `task` and `schema` and implement `__len__`,
    `key(index)` and `load_fields(index, epoch)`."""

    def _start_epochs(self, epoch: int) -> None:
        self.failures = FailureLog()
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose random choices (caption, target variant, degradation) items use."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"`epoch` must be an integer >= 0, got {epoch!r}.")
        self._epoch.fill_(epoch)

    def build(self, index: int, fields: dict, generator: torch.Generator) -> dict:
        return make_example(self.task, self.schema, fields, self.key(index), self.config.resolution, generator,
                            sr_scale=self.config.sr_scale, degradation=self.config.degradation)

    def get(self, index: int, epoch: int) -> dict | None:
        """Item `index` with the random choices of `epoch`, without touching the current epoch (for samplers
        that carry the epoch with each index); None when the sample is unreadable (logged in `failures`)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a source of {len(self)} samples")
        self.failures.attempt()
        try:
            fields, generator = self.load_fields(index, epoch)
            return self.build(index, fields, generator)
        except DATA_ERRORS as error:
            self.failures.record(self.key(index), error)
            return None

    def __getitem__(self, index: int) -> dict | None:
        return self.get(index, self.epoch)


class SourceDataset(ExampleDataset):
    """Example dicts (`mtu.data.examples`) of one source; an unreadable sample gives None and is logged.

    Args:
        config: The source.
        epoch: Initial epoch of the per-epoch random choices; the trainer calls `set_epoch` later.
    """

    def __init__(self, config: DataSourceConfig, epoch: int = 0):
        self.config = config
        self.task = get_task(config.task)
        self.schema = get_schema(config.schema)
        self.reader = open_reader(config.format, config.path, config.split)
        # Raises naming the missing column, before any sample is read.
        self.column_map = resolve_columns(self.schema, self.reader.columns, config.columns)
        self._start_epochs(epoch)

    def __len__(self) -> int:
        return len(self.reader)

    def key(self, index: int) -> str:
        try:
            return self.reader.key(index, self.column_map["target"])
        except DATA_ERRORS:
            return f"#{index}"

    def _rng(self, index: int, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed % 2 ** 64, epoch, index])

    def _choose(self, raw: dict, rng: np.random.Generator) -> dict:
        """One value per role: a list cell means "one of these" (captions, IP2P target variants)."""
        chosen, target_pick = {}, None
        for spec in self.schema.columns:  # schema order keeps the sequence of draws fixed
            column = self.column_map.get(spec.role)
            value = raw.get(column) if column is not None else None
            if value is None:
                if spec.required:
                    raise KeyError(f"column {column!r} (role {spec.role!r}) is missing or null in this sample")
                continue
            if isinstance(value, (list, tuple)):
                if not value:
                    raise ValueError(f"column {column!r} (role {spec.role!r}) is an empty list")
                # An output caption listed per target variant follows the target that was drawn.
                paired = spec.role == "output_caption" and target_pick is not None and len(value) == target_pick[1]
                pick = target_pick[0] if paired else int(rng.integers(len(value)))
                if spec.role == "target":
                    target_pick = (pick, len(value))
                value = value[pick]
            chosen[spec.role] = value
        return chosen

    def _decode(self, role: str, value):
        try:
            return open_image(value, self.reader.base_dir, mode="L" if role == "mask" else "RGB")
        except DATA_ERRORS as error:
            # Name the column: an error from bytes in an hf or tar source does not name any file.
            raise OSError(f"column {self.column_map[role]!r}: {type(error).__name__}: {error}") from error

    def load_fields(self, index: int, epoch: int | None = None) -> tuple[dict, torch.Generator]:
        """Reads, chooses and decodes sample `index`: role -> PIL image or str, and the generator of the
        remaining random draws (the SR degradation). `epoch` None uses the current epoch."""
        raw = self.reader.read(index, list(self.column_map.values()))
        rng = self._rng(index, self.epoch if epoch is None else epoch)
        fields = {}
        for role, value in self._choose(raw, rng).items():
            if self.schema.spec(role).kind == "image":
                fields[role] = self._decode(role, value)
            elif isinstance(value, str):
                fields[role] = value
            else:
                raise TypeError(f"text column {self.column_map[role]!r} holds a {type(value).__name__}, not a str")
        return fields, torch.Generator().manual_seed(int(rng.integers(2 ** 63)))


def source_config(data: dict):
    """A source dict as its config: `format: toyworld` gives a `ToyWorldConfig`, any other a `DataSourceConfig`."""
    if data.get("format") == "toyworld":
        from ..configuration import known_fields
        from ..toyworld.source import ToyWorldConfig

        return ToyWorldConfig(**known_fields(ToyWorldConfig, {k: v for k, v in data.items() if k != "format"}))
    return DataSourceConfig.from_dict(data)


def build_dataset(cfg, epoch_seed: int = 0):
    """Opens a source as a map-style dataset of example dicts.

    Args:
        cfg: A `DataSourceConfig`, a `ToyWorldConfig` (the built-in toy world, `mtu.toyworld`), or a dict of either
            (`format: toyworld` for the latter).
        epoch_seed: Initial epoch of the per-epoch random choices (`dataset.set_epoch(e)` changes it).
    """
    from ..toyworld.source import ToyWorldConfig, ToyWorldDataset

    if isinstance(cfg, dict):
        cfg = source_config(cfg)
    if isinstance(cfg, ToyWorldConfig):
        return ToyWorldDataset(cfg, epoch=epoch_seed)
    if not isinstance(cfg, DataSourceConfig):
        raise TypeError(f"`cfg` must be a DataSourceConfig, a ToyWorldConfig or a dict, got {type(cfg).__name__}.")
    return SourceDataset(cfg, epoch=epoch_seed)


def check_failure_rate(dataset: SourceDataset, cfg: DataSourceConfig | None = None, min_attempts: int = 20) -> float:
    """Raises once unreadable samples exceed `cfg.max_failure_fraction` of at least `min_attempts` reads.

    Returns:
        The failure fraction so far (0.0 before any read).
    """
    cfg = cfg or dataset.config
    log = dataset.failures
    fraction = log.count / log.attempts if log.attempts else 0.0
    if log.attempts >= min_attempts and fraction > cfg.max_failure_fraction:
        listed = "; ".join(f"{key} ({message})" for key, message in log.examples)
        raise RuntimeError(
            f"data source {cfg.path!r} (task {cfg.task!r}): {log.count} of {log.attempts} samples unreadable "
            f"({fraction:.1%} > max_failure_fraction={cfg.max_failure_fraction:g}); failing files: {listed}"
        )
    return fraction
