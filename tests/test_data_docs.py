"""docs/DATA.md lists every schema's keys as the code reads them (issue 14.7), and HF imagefolder's `file_name`
is an image key."""

from pathlib import Path

from mtu.data import DataSourceConfig, build_dataset
from mtu.data.schemas import schemas_markdown

from .data_builders import make_image, write_folder

DOC = Path(__file__).resolve().parent.parent / "docs" / "DATA.md"


def test_the_data_page_holds_every_schemas_keys():
    assert schemas_markdown() in DOC.read_text(), "docs/DATA.md is out of date: paste schemas_markdown() into it"


def test_imagefolder_file_name_is_the_image(tmp_path):
    """A metadata.jsonl as Hugging Face's imagefolder writes it: {"file_name": ..., "text": ...}."""
    folder = write_folder(tmp_path / "imagefolder", [{"file_name": make_image(0), "text": "a red square"}])
    example = build_dataset(DataSourceConfig("t2i", "folder", str(folder), "captions", resolution=16))[0]
    assert example["prompt"] == "a red square" and tuple(example["target"].shape) == (3, 16, 16)
