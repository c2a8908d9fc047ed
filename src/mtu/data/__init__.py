"""Training data: one source config per source, read into example dicts shared by every task (App. A.1).

    registry.py     formats as a registry: `register_format`, `source_from_dict` (any source dict, by `format`)
    config.py       DataSourceConfig (the file formats): task, format, path, schema, columns, resolution, weight
    schemas.py      column layouts (coco_captions, ...), `register_schema`; conditions.py: derived condition images
    sources.py      random-access readers: "folder" (metadata.jsonl) and "hf" (save_to_disk / parquet / hub)
    webdataset.py   random-access reader of WebDataset tar shards, and the shard layout
    imaging.py      image decoding (EXIF orientation, 16-bit, bomb limit) and the shared resize + center-crop
    degradation.py  seeded Real-ESRGAN-style degradation, the SR input
    examples.py     the example dict and `collate_examples`
    failures.py     SampleError, DATA_ERRORS (what a bad sample raises), FailureLog, `check_failure_rate`
    dataset.py      ExampleDataset, SourceDataset, `build_dataset`; registers "folder", "hf", "webdataset"
    validate.py     `validate_source` / `format_validation`, for every format

Other packages add formats (the toy world adds "toyworld") through `register_format` or the `mtu.data_formats`
entry-point group; nothing here imports them.
"""

from .config import DataSourceConfig
from .dataset import ExampleDataset, SourceDataset, build_dataset
from .degradation import DegradationConfig, degrade
from .examples import collate_examples, make_example
from .failures import DATA_ERRORS, FailureLog, SampleError, check_failure_rate
from .registry import DataFormat, available_formats, get_format, register_format, source_from_dict
from .schemas import ROLES, SCHEMAS, ColumnSpec, Schema, get_schema, register_schema, resolve_columns
from .sources import FolderReader, HFReader, load_hf_dataset, open_reader
from .validate import format_validation, validate_source
from .webdataset import TarShardReader, expand_shards

__all__ = [
    "DATA_ERRORS", "ROLES", "SCHEMAS", "ColumnSpec", "DataFormat", "DataSourceConfig", "DegradationConfig",
    "ExampleDataset", "FailureLog", "FolderReader", "HFReader", "SampleError", "Schema", "SourceDataset",
    "TarShardReader", "available_formats", "build_dataset", "check_failure_rate", "collate_examples", "degrade",
    "expand_shards", "format_validation", "get_format", "get_schema", "load_hf_dataset", "make_example",
    "open_reader", "register_format", "register_schema", "resolve_columns", "source_from_dict", "validate_source",
]
