"""Random-access readers of the "folder" and "hf" formats, and `open_reader` for all three formats.

A reader gives raw cells by index; decoding, random choices and geometry happen in `mtu.data.dataset`. Random
access (not streaming) is what lets the trainer resume exactly at a sampler position.

Reader interface (duck-typed; `mtu.data.webdataset.TarShardReader` follows it too):
    columns: list[str]                 -- column names found, checked against the schema at construction
    base_dir: str | None               -- folder that relative image paths are relative to
    __len__() -> int
    read(index, columns) -> dict       -- column -> raw cell (path, bytes, `datasets.Image` cell, str, list)
    key(index, key_column) -> str      -- file name or row id for reports
    contents(index) -> str             -- what the sample holds, for a message about a missing column
    problems: list[str]                -- (optional) defects found at construction, e.g. a tar shard cut short
"""

from __future__ import annotations

import glob
import json
import os

from ..errors import InputError
from .failures import SampleError

METADATA_FILE = "metadata.jsonl"
_ID_COLUMNS = ("key", "__key__", "id", "image_id", "file_name")
_SCAN_ROWS = 100  # rows whose keys make up a folder source's columns (optional fields may be absent in row 1)


class FolderReader:
    """A folder with `metadata.jsonl`: one JSON object per line; image cells are paths relative to the folder,
    text cells are strings or lists of strings (a list means "one of these, drawn per epoch")."""

    def __init__(self, path: str):
        self.metadata = os.path.join(path, METADATA_FILE)
        if not os.path.isfile(self.metadata):
            raise InputError(f"must be a folder holding {METADATA_FILE}; not found: {self.metadata}.", field="path")
        with open(self.metadata, "rb") as handle:
            # Raw lines, decoded and parsed on access: a line that is not UTF-8 JSON fails its own sample (naming
            # the file and line) rather than the whole source.
            self._lines = [(number, line) for number, line in enumerate(handle.read().splitlines(), 1)
                           if line.strip()]
        if not self._lines:
            raise InputError(f"{self.metadata} has no rows.", field="path")
        self.base_dir = path
        self.columns = self._scan_columns()

    def _scan_columns(self) -> list[str]:
        columns: dict[str, None] = {}
        for index in range(min(_SCAN_ROWS, len(self._lines))):
            try:
                columns.update(dict.fromkeys(self._row(index)))
            except SampleError:
                continue  # counted as a failure when the sample is read
        if not columns:
            raise InputError(f"no readable JSON object in the first {_SCAN_ROWS} rows of {self.metadata}; the "
                             f"first: {self._row_error(0)}", field="path")
        return list(columns)

    def _row_error(self, index: int) -> str:
        try:
            self._row(index)
        except SampleError as error:
            return str(error)
        return "readable"

    def __len__(self) -> int:
        return len(self._lines)

    def _row(self, index: int) -> dict:
        number, line = self._lines[index]
        where = f"{self.metadata} line {number}"
        try:
            row = json.loads(line.decode("utf-8-sig"))  # -sig: a byte-order mark before the first row is harmless
        except UnicodeDecodeError as error:
            raise SampleError(f"{where}: not UTF-8 ({error.reason}: byte {line[error.start]:#04x} at position "
                              f"{error.start}); save the file as UTF-8.") from None
        except json.JSONDecodeError as error:
            raise SampleError(f"{where}: not JSON ({error.msg} at column {error.colno}).") from None
        if not isinstance(row, dict):
            raise SampleError(f"{where}: not a JSON object, got {type(row).__name__}.")
        return row

    def read(self, index: int, columns: list[str]) -> dict:
        row = self._row(index)
        return {column: row[column] for column in columns if column in row}

    def contents(self, index: int) -> str:
        """What sample `index` holds, for messages about a missing column."""
        return f"{METADATA_FILE} line {self._lines[index][0]} has keys {list(self._row(index))}"

    def key(self, index: int, key_column: str) -> str:
        try:
            value = self._row(index).get(key_column)
        except SampleError:
            value = None
        value = value[0] if isinstance(value, list) and value else value
        return value if isinstance(value, str) else f"{METADATA_FILE}:{self._lines[index][0]}"


def _data_files(path: str, split: str) -> list[str]:
    folder = os.path.join(path, split) if os.path.isdir(os.path.join(path, split)) else path
    for extension in ("parquet", "arrow"):
        files = sorted(glob.glob(os.path.join(folder, "**", f"*.{extension}"), recursive=True))
        if files:
            return files
    return []


def _pick_split(loaded, split: str, path: str):
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise InputError(f"{split!r} is not in {path!r}; splits found: {list(loaded)}.", field="split")
        return loaded[split]
    return loaded


def load_hf_dataset(path: str, split: str = "train"):
    """Opens a `save_to_disk` folder, a folder (or file) of .parquet/.arrow files, or a hub id (online only)."""
    import datasets

    if os.path.isdir(path):
        if any(os.path.isfile(os.path.join(path, name)) for name in ("state.json", "dataset_dict.json")):
            return _pick_split(datasets.load_from_disk(path), split, path)
        files = _data_files(path, split)
        if not files:
            raise InputError(f"{path!r} is neither a save_to_disk folder nor a folder of .parquet/.arrow files.",
                             field="path")
    elif os.path.isfile(path):
        if not path.endswith((".parquet", ".arrow")):
            raise InputError(f"{path!r} is a file; supported files: .parquet, .arrow.", field="path")
        files = [path]
    else:
        try:
            return datasets.load_dataset(path, split=split)
        except Exception as error:  # hub failures come in many types: say which path was tried, and why as a hub id
            raise InputError(f"{path!r} is not a local folder or file, and loading it as a hub dataset failed (hub "
                             f"ids need a network): {type(error).__name__}: {error}", field="path") from error
    builder = "parquet" if files[0].endswith(".parquet") else "arrow"
    return datasets.load_dataset(builder, data_files=files, split="train")


class HFReader:
    """A Hugging Face `datasets.Dataset`, read in Arrow format so that image cells arrive undecoded
    ({"bytes", "path"}) and a corrupt image fails only its own sample, inside the dataset's error handling."""

    def __init__(self, path: str, split: str = "train"):
        self._dataset = load_hf_dataset(path, split)
        self._split = split
        self.columns = list(self._dataset.column_names)
        self.base_dir = path if os.path.isdir(path) else os.path.dirname(path) if os.path.isfile(path) else None
        self._id_column = next((name for name in _ID_COLUMNS if name in self.columns), None)
        self._views: dict[tuple[str, ...], object] = {}

    def __len__(self) -> int:
        return len(self._dataset)

    def read(self, index: int, columns: list[str]) -> dict:
        names = tuple(column for column in columns if column in self.columns)
        if names not in self._views:
            # Selecting first keeps unused (possibly large) image columns from being read at all.
            self._views[names] = self._dataset.select_columns(list(names)).with_format("arrow")
        return self._views[names][index].to_pylist()[0]

    def contents(self, index: int) -> str:
        """What sample `index` holds, for messages about a missing column."""
        return f"row {index} of split {self._split!r}"

    def key(self, index: int, key_column: str) -> str:
        if self._id_column is None:
            return f"{self._split}[{index}]"
        return str(self.read(index, [self._id_column])[self._id_column])


def open_reader(format: str, path: str, split: str = "train"):
    """The reader of a `DataSourceConfig.format`."""
    if format == "folder":
        return FolderReader(path)
    if format == "hf":
        return HFReader(path, split)
    if format == "webdataset":
        from .webdataset import TarShardReader

        return TarShardReader(path)
    raise InputError(f"must be one of ('folder', 'hf', 'webdataset'), got {format!r}.", field="format")
