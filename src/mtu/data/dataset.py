"""`SourceDataset`: a map-style dataset of example dicts from one file-backed source, and `build_dataset` for any
registered format (`mtu.data.registry`).

Random choices (which caption, which of several targets, the SR degradation) are drawn from a generator seeded
by (config seed, epoch, index), so item i of epoch e is the same whenever it is read: the trainer can resume at
a sampler position and get the very samples it would have seen.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InputError
from ..upcycling.tasks import get_task
from .config import DataSourceConfig
from .examples import make_example
from .failures import DATA_ERRORS, FailureLog, SampleError, check_failure_rate
from .imaging import open_image
from .registry import DataFormat, get_format, register_format, source_from_dict
from .schemas import get_schema, resolve_columns
from .sources import open_reader

__all__ = ["DATA_ERRORS", "ExampleDataset", "FailureLog", "SampleError", "SourceDataset", "build_dataset",
           "check_failure_rate"]


class ExampleDataset(Dataset):
    """What every source's dataset shares: its current epoch (in shared memory, so `set_epoch` in the main process
    reaches persistent DataLoader workers), its `failures` log, and `get(index, epoch)`, which turns an unreadable
    sample into None and a log entry. Subclasses set `config`, `task` and `schema`, implement `__len__`,
    `key(index)` and `load_fields(index, epoch)`, and may override `problems` (defects found when the source was
    opened, e.g. a shard cut short) and `describe()` (format-specific entries of `validate_source`'s report)."""

    problems: tuple[str, ...] | list[str] = ()

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
            raise InputError(f"must be an integer >= 0, got {epoch!r}.", field="epoch")
        self._epoch.fill_(epoch)

    def describe(self) -> dict:
        """Format-specific entries of a validation report (columns found, shard layout, ...)."""
        return {}

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
    """Example dicts (`mtu.data.examples`) of one file-backed source; an unreadable sample gives None and is logged.

    Args:
        config: The source.
        epoch: Initial epoch of the per-epoch random choices; the trainer calls `set_epoch` later.
    """

    def __init__(self, config: DataSourceConfig, epoch: int = 0):
        self.config = config
        self.task = get_task(config.task)
        self.schema = get_schema(config.schema)
        self.reader = open_reader(config.format, config.path, config.split)
        self.problems = list(getattr(self.reader, "problems", ()))
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

    def describe(self) -> dict:
        return {"columns": dict(self.column_map), "available_columns": list(self.reader.columns),
                "webdataset_layout": self.schema.webdataset_layout if self.config.format == "webdataset" else None}

    def _rng(self, index: int, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed % 2 ** 64, epoch, index])

    def _choose(self, index: int, raw: dict, rng: np.random.Generator) -> dict:
        """One value per role: a list cell means "one of these" (captions, IP2P target variants)."""
        chosen, target_pick = {}, None
        for spec in self.schema.columns:  # schema order keeps the sequence of draws fixed
            column = self.column_map.get(spec.role)
            value = raw.get(column) if column is not None else None
            if value is None:
                if spec.required:
                    raise SampleError(f"column {column!r} (role {spec.role!r}) is missing or null in this sample; "
                                      f"{self.reader.contents(index)}")
                continue
            if isinstance(value, (list, tuple)):
                if not value:
                    raise SampleError(f"column {column!r} (role {spec.role!r}) is an empty list")
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
            raise SampleError(f"column {self.column_map[role]!r}: {error}") from error

    def load_fields(self, index: int, epoch: int) -> tuple[dict, torch.Generator]:
        """Reads, chooses and decodes sample `index` with the random choices of `epoch`: role -> PIL image or str,
        and the generator of the remaining random draws (the SR degradation)."""
        raw = self.reader.read(index, list(self.column_map.values()))
        rng = self._rng(index, epoch)
        fields = {}
        for role, value in self._choose(index, raw, rng).items():
            if self.schema.spec(role).kind == "image":
                fields[role] = self._decode(role, value)
            elif isinstance(value, str):
                fields[role] = value
            else:
                raise SampleError(f"text column {self.column_map[role]!r} holds a {type(value).__name__}, not a "
                                  f"string: {str(value)[:80]!r}")
        return fields, torch.Generator().manual_seed(int(rng.integers(2 ** 63)))


def build_dataset(cfg, epoch_seed: int = 0) -> ExampleDataset:
    """Opens a source of any registered format as a map-style dataset of example dicts.

    Args:
        cfg: A source config (`DataSourceConfig`, or a registered format's config such as the toy world's), or its
            dict with a `format` key.
        epoch_seed: Initial epoch of the per-epoch random choices (`dataset.set_epoch(e)` changes it).
    """
    if isinstance(cfg, dict):
        cfg = source_from_dict(cfg)
    data_format = get_format(getattr(cfg, "format", None))
    if not isinstance(cfg, data_format.config_class):
        raise InputError(f"a {data_format.name!r} source needs a {data_format.config_class.__name__} or a dict, got "
                         f"{type(cfg).__name__}.", field="cfg")
    return data_format.dataset_class(cfg, epoch=epoch_seed)


for _name, _description in (("folder", "a folder with metadata.jsonl"),
                            ("hf", "a Hugging Face dataset: save_to_disk, parquet/arrow files, or a hub id"),
                            ("webdataset", "uncompressed WebDataset .tar shards")):
    register_format(DataFormat(_name, DataSourceConfig, SourceDataset, _description))
