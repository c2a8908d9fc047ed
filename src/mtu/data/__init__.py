"""Training data: one `DataSourceConfig` per source, read into example dicts shared by every task (App. A.1).

    config.py       DataSourceConfig: task, format, path, schema, column overrides, resolution, mixing weight
    schemas.py      column layouts (coco_captions, instructpix2pix, gqa_inpaint, mask_inpaint, sr_highres, captions)
    sources.py      random-access readers: "folder" (metadata.jsonl) and "hf" (save_to_disk / parquet / hub)
    webdataset.py   random-access reader of WebDataset tar shards, and the shard layout
    imaging.py      image decoding and the shared resize + center-crop
    degradation.py  seeded Real-ESRGAN-style degradation, the SR input
    examples.py     the example dict and `collate_examples`
    dataset.py      SourceDataset, failure accounting, `build_dataset`, `check_failure_rate`
    validate.py     `validate_source` / `format_validation`
"""

from .config import DataSourceConfig
from .dataset import DATA_ERRORS, FailureLog, SourceDataset, build_dataset, check_failure_rate, source_config
from .degradation import DegradationConfig, degrade
from .examples import collate_examples, make_example
from .schemas import ROLES, SCHEMAS, ColumnSpec, Schema, get_schema, resolve_columns
from .sources import FolderReader, HFReader, load_hf_dataset, open_reader
from .validate import format_validation, validate_source
from .webdataset import TarShardReader, expand_shards

__all__ = [
    "source_config",
    "DATA_ERRORS", "ROLES", "SCHEMAS", "ColumnSpec", "DataSourceConfig", "DegradationConfig", "FailureLog",
    "FolderReader", "HFReader", "Schema", "SourceDataset", "TarShardReader", "build_dataset", "check_failure_rate",
    "collate_examples", "degrade", "expand_shards", "format_validation", "get_schema", "load_hf_dataset",
    "make_example", "open_reader", "resolve_columns", "validate_source",
]
