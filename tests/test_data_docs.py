"""docs/DATA.md lists every schema's keys as the code reads them (issue 14.7), and HF imagefolder's `file_name`
is an image key."""

from pathlib import Path

from mtu.data import DataSourceConfig, build_dataset
from mtu.cli import main
from mtu.data.schemas import SCHEMAS, schema_markdown, schemas_markdown

from .data_builders import make_image, write_folder

DOC = Path(__file__).resolve().parent.parent / "docs" / "DATA.md"


PAPER_SCHEMAS = ("coco_captions", "instructpix2pix", "gqa_inpaint", "mask_inpaint", "sr_highres", "captions")


def test_the_data_page_holds_the_paper_schemas_keys_as_the_code_reads_them():
    """Every schema the page documents is documented as the code reads it (a schema added later, e.g. by a new
    built-in task, is listed by `mtu data schemas` without an edit here)."""
    text = DOC.read_text()
    documented = [name for name in SCHEMAS if f"### `{name}`:" in text]
    assert set(PAPER_SCHEMAS) <= set(documented), documented
    for name in documented:
        assert schema_markdown(SCHEMAS[name]) in text, f"docs/DATA.md is out of date: paste `mtu data schemas`'s {name}"


def test_mtu_data_schemas_prints_every_registered_schema(capsys):
    assert main(["data", "schemas"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == schemas_markdown().strip() and all(f"### `{name}`:" in out for name in SCHEMAS)


def test_imagefolder_file_name_is_the_image(tmp_path):
    """A metadata.jsonl as Hugging Face's imagefolder writes it: {"file_name": ..., "text": ...}."""
    folder = write_folder(tmp_path / "imagefolder", [{"file_name": make_image(0), "text": "a red square"}])
    example = build_dataset(DataSourceConfig("t2i", "folder", str(folder), "captions", resolution=16))[0]
    assert example["prompt"] == "a red square" and tuple(example["target"].shape) == (3, 16, 16)
