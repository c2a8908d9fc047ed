"""Sources as a registry: the data layer defines formats and `register_format`; the toy world registers "toyworld"
itself (found through the `mtu.data_formats` entry point); `mtu data validate` works for every format."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
import yaml

import mtu.data
from mtu import InputError
from mtu.cli import main
from mtu.data import DataFormat, DataSourceConfig, ExampleDataset, build_dataset, register_format, validate_source
from mtu.data import registry
from mtu.data.registry import source_from_dict

from .data_builders import records_for, write_folder

DATA_DIR = Path(mtu.data.__file__).parent
TOY = {"format": "toyworld", "task": "t2i", "count": 6, "resolution": 32}


def test_the_data_layer_imports_no_toy_world():
    """Before: data/dataset.py imported mtu.toyworld.source (and that imported data/dataset.py)."""
    offenders = []
    for path in sorted(DATA_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [f"{'.' * node.level}{node.module or ''}"] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {name}" for name in names if "toyworld" in name]
    assert offenders == []


def test_toyworld_is_found_through_its_entry_point(monkeypatch):
    """A format nobody imported is registered from the `mtu.data_formats` entry-point group when a source names it."""
    [entry_point] = [ep for ep in metadata.entry_points(group=registry.ENTRY_POINT_GROUP) if ep.name == "toyworld"]
    assert entry_point.value == "mtu.toyworld.source:FORMAT"
    monkeypatch.setattr(registry.FORMATS, "items", {name: fmt for name, fmt in registry.FORMATS.items.items()
                                                    if name != "toyworld"})
    monkeypatch.setattr(registry.FORMATS, "_loaded", False)
    config = source_from_dict({"format": "toyworld", "task": "edit"})
    assert type(config).__module__ == "mtu.toyworld.source" and "toyworld" in registry.FORMATS.items


def test_one_parser_for_every_format():
    toy = DataSourceConfig.from_dict(TOY)
    assert type(toy).__name__ == "ToyWorldConfig" and toy.task == "t2i" and toy.count == 6
    assert source_from_dict(toy.to_dict()) == toy  # round trip, `format` included
    folder = source_from_dict({"format": "folder", "task": "t2i", "path": "x", "schema": "captions"})
    assert isinstance(folder, DataSourceConfig)


@pytest.mark.parametrize("entry, field, pattern", [
    ({**TOY, "resolution": 30}, "resolution", r"multiple of 8 in \[32, 128\], got 30"),
    ({**TOY, "count": 0}, "count", r"an integer >= 1, got 0"),
    ({**TOY, "task": "sketch2img"}, "task", r"one of \('t2i', .*\).*, got 'sketch2img'"),
    ({**TOY, "weight": float("inf")}, "weight", r"a finite number > 0, got inf"),
    ({**TOY, "path": "x"}, "path", r"unknown key; .*ToyWorldConfig keys: task, count"),
    ({**TOY, "cuont": 5}, "cuont", r"unknown key; did you mean 'count'\?"),
    ({**TOY, "degradation": {"jpeg_quality": [0, 5]}}, "degradation.jpeg_quality", r"got \[0, 5\]"),
    ({"format": "toyworld"}, "task", r"required by ToyWorldConfig"),
    ({"format": "tfrecord", "task": "t2i"}, "format", r"one of \('folder', 'hf', 'webdataset', 'toyworld'.*"
                                                      r"got 'tfrecord'.*register_format"),
    ({"task": "t2i"}, "format", r"required, one of"),
    (["folder"], None, r"a data source must be a mapping"),
])
def test_source_errors_name_the_field_relative_to_the_source(entry, field, pattern):
    with pytest.raises(InputError, match=pattern) as caught:
        source_from_dict(entry)
    assert caught.value.field == field
    assert str(caught.value.within("data[2]")).startswith(f"data[2].{field}: " if field else "data[2]: ")


@dataclass
class CountingConfig:
    task: str = "t2i"
    count: int = 3
    resolution: int = 16
    weight: float = 1.0
    max_failure_fraction: float = 0.0
    sr_scale: int = 2
    degradation: object = None
    format: str = "counting"

    path = "counting:test"

    @classmethod
    def from_dict(cls, data):
        return cls(**data)


class CountingDataset(ExampleDataset):
    """A plug-in source: grey images captioned with their index; item 1 is unreadable."""

    def __init__(self, config, epoch=0):
        from mtu.data import get_schema
        from mtu.upcycling.tasks import get_task

        self.config, self.task, self.schema = config, get_task("t2i"), get_schema("captions")
        self._start_epochs(epoch)

    def __len__(self):
        return self.config.count

    def key(self, index):
        return f"counting-{index}"

    def load_fields(self, index, epoch):
        import torch
        from PIL import Image

        if index == 1:
            raise mtu.data.SampleError("counting-1: unreadable on purpose")
        return {"target": Image.new("RGB", (20, 20), (index * 60,) * 3), "prompt": f"number {index}"}, \
            torch.Generator().manual_seed(index)


@pytest.fixture
def counting_format():
    data_format = register_format(DataFormat("counting", CountingConfig, CountingDataset, "a test plug-in"))
    yield data_format
    registry.FORMATS.items.pop("counting")


def test_a_plugin_format_works_everywhere(counting_format):
    assert "counting" in mtu.data.available_formats()
    config = source_from_dict({"format": "counting", "task": "t2i", "count": 3})
    dataset = build_dataset(config)
    assert dataset[0]["prompt"] == "number 0" and dataset[1] is None
    report = validate_source({"format": "counting", "count": 3})
    assert (report["num_samples"], report["num_readable"], report["num_failed"], report["ok"]) == (3, 2, 1, False)
    assert report["failures"] == [{"key": "counting-1", "error": "SampleError: counting-1: unreadable on purpose"}]
    with pytest.raises(InputError, match="format 'counting' is registered already"):
        register_format(DataFormat("counting", CountingConfig, ExampleDataset))


def test_validate_source_of_a_toy_source():
    """Before: `validate_source` read `dataset.reader` and `column_map`, which a toy source lacks."""
    report = validate_source({**TOY, "task": "edit"}, limit=4)
    assert (report["format"], report["schema"], report["num_checked"], report["num_readable"]) == \
        ("toyworld", "instructpix2pix", 4, 4)
    assert report["ok"] and report["count"] == 6 and report["optional_fields"] == {"input_caption": 4,
                                                                                  "output_caption": 4}
    assert "columns" not in report
    assert "-> OK" in mtu.data.format_validation(report)


def write_config(tmp_path, data) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "run"), "data": data}))
    return str(path)


def test_data_validate_a_two_source_toy_config(capsys, tmp_path):
    """Before: "DataSourceConfig: missing required key(s) ['path', 'schema']" on this very config."""
    folder = write_folder(tmp_path / "folder", records_for("captions", 3))
    config = write_config(tmp_path, [{**TOY, "task": "t2i"}, {**TOY, "task": "sr", "weight": 2.0},
                                     {"format": "folder", "task": "t2i", "path": str(folder), "schema": "captions",
                                      "resolution": 16}])
    code = main(["data", "validate", "--config", config, "--limit", "3", "--json"])
    reports = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [(r["format"], r["task"], r["num_readable"]) for r in reports] == \
        [("toyworld", "t2i", 3), ("toyworld", "sr", 3), ("folder", "t2i", 3)]


@pytest.mark.parametrize("data, message", [
    ([TOY, {**TOY, "seeds": 1}], "mtu: error: data[1].seeds: unknown key; did you mean 'seed'?"),
    ([{**TOY, "resolution": 30}], "mtu: error: data[0].resolution: must be a multiple of 8"),
    ([{"format": "tfrecord", "task": "t2i"}], "mtu: error: data[0].format: must be one of ('folder', 'hf',"),
    ([{"format": "folder", "task": "t2i", "path": "/no/such/folder", "schema": "captions"}],
     "mtu: error: data[0].path: must be a folder holding metadata.jsonl; not found: /no/such/folder/metadata.jsonl"),
    ({"format": "folder"}, "mtu: error: --config: "),
    ([], "mtu: error: --config: "),
])
def test_data_validate_config_errors_are_one_line(capsys, tmp_path, data, message):
    code = main(["data", "validate", "--config", write_config(tmp_path, data)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(message), err


@pytest.mark.parametrize("write, message", [
    (None, "mtu: error: --config: file '{path}' does not exist."),
    ("data: [unclosed\n", "mtu: error: --config: {path} is not a readable YAML file: "),
    ("- just\n- a list\n", "mtu: error: --config: {path}: `data` must be a non-empty list of sources, got a list"),
])
def test_data_validate_unreadable_config_is_one_line(capsys, tmp_path, write, message):
    path = tmp_path / "run.yaml"
    if write is not None:
        path.write_text(write)
    code = main(["data", "validate", "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(message.format(path=path)), err


def test_data_validate_flag_errors_are_one_line(capsys, tmp_path):
    folder = write_folder(tmp_path / "folder", records_for("captions", 2))
    flags = ["data", "validate", "--task", "t2i", "--format", "folder", "--path", str(folder)]
    assert main(flags + ["--schema", "captions", "--columns", "prompt"]) == 2
    assert capsys.readouterr().err == ("mtu: error: --columns: must be role=column pairs separated by commas, got "
                                       "'prompt'.\n")
    assert main(flags) == 2
    assert capsys.readouterr().err.startswith("mtu: error: --schema: required by DataSourceConfig, but missing")
    assert main(flags + ["--schema", "captions", "--limit", "-1"]) == 2
    assert capsys.readouterr().err == "mtu: error: limit: must be None or an integer >= 0, got -1.\n"


def test_data_validate_any_registered_format_from_flags(capsys):
    """Before: `--format` took only folder, hf and webdataset (`invalid choice: 'toyworld'`), and a format's other
    fields (a toy source's count and seed) had no flag."""
    code = main(["data", "validate", "--format", "toyworld", "--task", "edit", "--option", "count=5",
                 "--option", "seed=3", "--json"])
    (report,) = json.loads(capsys.readouterr().out)
    assert code == 0 and (report["format"], report["count"], report["seed"], report["num_readable"]) == \
        ("toyworld", 5, 3, 5)


@pytest.mark.parametrize("flags, message", [
    (["--format", "tfrecord", "--task", "t2i"], "--format: must be one of ('folder', 'hf', 'webdataset', 'toyworld'"),
    (["--format", "toyworld", "--task", "t2i", "--option", "count=0"], "--option count: must be an integer >= 1"),
    (["--format", "toyworld", "--task", "t2i", "--option", "cnt=3"], "--option cnt: unknown key; did you mean 'count'"),
    (["--format", "toyworld", "--task", "t2i", "--option", "path=3"], "--option: give 'path' as --path, got path=3."),
    (["--format", "toyworld", "--task", "t2i", "--option", "=3"], "--option: must be KEY=VALUE, got '=3'."),
    (["--task", "t2i"], "give --config RUN.yaml, or --task and --format with the format's fields (missing: --format)"),
])
def test_data_validate_format_flag_errors_name_the_flag(capsys, flags, message):
    assert main(["data", "validate", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mtu: error: " + message), err
