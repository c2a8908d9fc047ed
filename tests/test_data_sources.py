"""Every schema in every format yields the same, correct example dicts; seeded choices; column mapping errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from mtu.data import DataSourceConfig, build_dataset, expand_shards
from mtu.data.webdataset import member_column

from .data_builders import SIZE, make_image, make_mask, records_for, write_folder, write_source

R = 16
TASK_OF = {"coco_captions": "t2i", "instructpix2pix": "edit", "gqa_inpaint": "inpaint",
           "mask_inpaint": "inpaint_mask", "sr_highres": "sr", "captions": "t2i"}
PROMPT_OF = {"coco_captions": None, "instructpix2pix": "make it red 1", "gqa_inpaint": "remove the cat 1",
             "mask_inpaint": "a dog 1", "sr_highres": "", "captions": "text 1"}
FORMATS = ["folder", "hf", "hf_parquet", "webdataset"]


def source(tmp_path, fmt: str, schema: str, records=None, **overrides) -> DataSourceConfig:
    path = write_source(tmp_path / f"{fmt}_{schema}", fmt, records or records_for(schema))
    return DataSourceConfig(task=TASK_OF[schema], format="hf" if fmt.startswith("hf") else fmt, path=str(path),
                            schema=schema, resolution=R, **overrides)


def reference(image: Image.Image) -> torch.Tensor:
    """An independent center crop + resize (crop first, then resize), in [-1, 1]."""
    fitted = ImageOps.fit(image.convert("RGB"), (R, R), method=Image.BICUBIC)
    return torch.from_numpy(np.asarray(fitted, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("schema", list(TASK_OF))
def test_each_schema_in_each_format_gives_the_example_dict(tmp_path, fmt, schema):
    records = records_for(schema)
    dataset = build_dataset(source(tmp_path, fmt, schema, records))
    assert len(dataset) == 3
    example = dataset[1]
    assert example["task"] == TASK_OF[schema]
    assert example["target"].shape == (3, R, R) and example["target"].dtype == torch.float32
    assert -1 <= example["target"].min() and example["target"].max() <= 1
    target_image = records[1].get("image") or records[1].get("edited_image") or records[1]["target_image"]
    # ~0.06 from resampling differences; a left-aligned crop is ~0.2 away, another image ~0.6.
    assert (example["target"] - reference(target_image)).abs().mean() < 0.1
    has_condition = schema not in ("coco_captions", "captions")
    assert ("condition" in example) == has_condition
    if has_condition:
        assert example["condition"].shape == (3, R, R)
        assert -1 <= example["condition"].min() and example["condition"].max() <= 1
    assert ("mask" in example) == (schema == "mask_inpaint")
    if schema == "coco_captions":
        assert example["prompt"] in records[1]["captions"]
    else:
        assert example["prompt"] == PROMPT_OF[schema]
    if schema == "instructpix2pix":
        assert (example["input_caption"], example["output_caption"]) == ("a photo 1", "a red photo 1")
        assert (example["condition"] - reference(records[1]["original_image"])).abs().mean() < 0.1
    assert isinstance(example["key"], str) and example["key"]
    assert torch.equal(dataset[1]["target"], example["target"])  # random access is deterministic


def test_condition_of_another_size_gets_the_target_geometry(tmp_path):
    # The source image is stored at twice the size of the target; both must land on the same crop.
    records = [{"source_image": make_image(7).resize((64, 48), Image.NEAREST), "target_image": make_image(7),
                "instruction": "remove the cat"}]
    path = write_folder(tmp_path / "gqa", records)
    example = build_dataset(DataSourceConfig("inpaint", "folder", str(path), "gqa_inpaint", resolution=R))[0]
    assert (example["condition"] - example["target"]).abs().mean() < 0.03


@pytest.mark.parametrize("fmt", ["folder", "webdataset"])
def test_mask_and_masked_condition_share_the_crop(tmp_path, fmt):
    example = build_dataset(source(tmp_path, fmt, "mask_inpaint"))[0]
    mask = example["mask"]
    assert mask.shape == (1, R, R) and set(mask.unique().tolist()) == {0.0, 1.0}
    # 32x24 -> 21x16, crop offset 2: the white left half covers columns 0..8 of the crop.
    assert torch.all(mask[..., :8] == 1) and torch.all(mask[..., 10:] == 0)
    condition, target = example["condition"], example["target"]
    assert torch.all(condition[:, mask[0] == 1] == 0)  # masked pixels: 0 in [-1, 1], as SD-inpainting
    assert torch.equal(condition[:, mask[0] == 0], target[:, mask[0] == 0])


@pytest.mark.parametrize("fmt", ["folder", "hf", "webdataset"])
def test_coco_caption_choice_is_seeded_by_seed_index_and_epoch(tmp_path, fmt):
    config = source(tmp_path, fmt, "coco_captions")
    first, second = build_dataset(config), build_dataset(config)
    assert [first[i]["prompt"] for i in range(3)] == [second[i]["prompt"] for i in range(3)]
    chosen = set()
    for epoch in range(8):
        first.set_epoch(epoch)
        chosen.add(first[0]["prompt"])
        assert build_dataset(config, epoch_seed=epoch)[0]["prompt"] == first[0]["prompt"]
        assert second.get(0, epoch)["prompt"] == first[0]["prompt"]  # epoch given per item, as a sampler may
    assert len(chosen) > 1 and chosen <= {f"caption 0-{j}" for j in range(5)}


@pytest.mark.parametrize("fmt", ["folder", "hf", "webdataset"])
def test_instructpix2pix_draws_one_of_several_targets_with_its_caption(tmp_path, fmt):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    records = [{"original_image": make_image(0),
                "edited_image": [Image.new("RGB", SIZE, colour) for colour in colours],
                "edit_prompt": "paint it", "output_caption": ["red", "green", "blue"]}]
    dataset = build_dataset(source(tmp_path, fmt, "instructpix2pix", records))
    picked = set()
    for epoch in range(8):
        dataset.set_epoch(epoch)
        example = dataset[0]
        channel = int(example["target"].mean(dim=(1, 2)).argmax())
        assert example["output_caption"] == ["red", "green", "blue"][channel]
        picked.add(channel)
        assert torch.equal(dataset[0]["target"], example["target"])
    assert len(picked) > 1


def test_sr_condition_is_a_degraded_target_seeded_per_index(tmp_path):
    config = source(tmp_path, "folder", "sr_highres")
    dataset = build_dataset(config)
    example = dataset[0]
    assert example["prompt"] == ""
    assert not torch.equal(example["condition"], example["target"])
    assert torch.equal(build_dataset(config)[0]["condition"], example["condition"])
    assert not torch.equal(dataset[1]["condition"], example["condition"])


def test_column_override_maps_a_renamed_column(tmp_path):
    records = [{"image": make_image(0), "alt_text": "a renamed caption"}]
    path = write_folder(tmp_path / "renamed", records)
    config = DataSourceConfig("t2i", "folder", str(path), "captions", resolution=R, columns={"prompt": "alt_text"})
    assert build_dataset(config)[0]["prompt"] == "a renamed caption"


@pytest.mark.parametrize("fmt", ["folder", "hf", "webdataset"])
def test_missing_column_is_named_at_construction(tmp_path, fmt):
    records = [{"original_image": make_image(0), "edited_image": make_image(1), "caption": "x"}]
    config = source(tmp_path, fmt, "instructpix2pix", records)
    with pytest.raises(ValueError, match=r"instructpix2pix.*'prompt'.*edit_prompt.*columns found"):
        build_dataset(config)


def test_overridden_column_that_does_not_exist_is_named(tmp_path):
    path = write_folder(tmp_path / "captions", records_for("captions", 1))
    config = DataSourceConfig("t2i", "folder", str(path), "captions", resolution=R, columns={"prompt": "nope"})
    with pytest.raises(ValueError, match=r"'nope'.*captions.*columns found: \['image', 'text'\]"):
        build_dataset(config)


def test_missing_source_paths_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="metadata.jsonl"):
        build_dataset(DataSourceConfig("t2i", "folder", str(tmp_path), "captions", resolution=R))
    with pytest.raises(ValueError, match="no .tar shards"):
        build_dataset(DataSourceConfig("t2i", "webdataset", str(tmp_path), "captions", resolution=R))
    with pytest.raises(ValueError, match="neither a save_to_disk folder nor"):
        build_dataset(DataSourceConfig("t2i", "hf", str(tmp_path), "captions", resolution=R))


def test_webdataset_shard_patterns_and_member_columns(tmp_path):
    write_source(tmp_path / "wds", "webdataset", records_for("captions", 5))  # 3 shards of <= 2 samples
    folder = tmp_path / "wds"
    assert len(expand_shards(str(folder))) == 3
    assert expand_shards(str(folder / "shard-{000000..000001}.tar")) == [
        str(folder / "shard-000000.tar"), str(folder / "shard-000001.tar")]
    assert len(expand_shards(str(folder / "shard-*.tar"))) == 3
    with pytest.raises(ValueError, match="not found"):
        expand_shards(str(folder / "shard-{000000..000009}.tar"))
    config = DataSourceConfig("t2i", "webdataset", str(folder / "shard-{000001,000002}.tar"), "captions",
                              resolution=R)
    dataset = build_dataset(config)
    assert len(dataset) == 3 and dataset[0]["prompt"] == "text 2"
    assert member_column("jpg") == ("image", None, "image")
    assert member_column("edited_image.2.png") == ("edited_image", 2, "image")
    assert member_column("mask.png") == ("mask", None, "image")
    assert member_column("txt") == ("text", None, "text")
    assert member_column("json") == (None, None, "json")


def test_webdataset_mask_member_and_text_member(tmp_path):
    import io
    import tarfile

    with tarfile.open(tmp_path / "one.tar", "w") as archive:
        for name, data in [("sub/a.jpg", make_image(0)), ("sub/a.mask.png", make_mask()), ("sub/a.txt", b"a dog")]:
            if isinstance(data, Image.Image):
                buffer = io.BytesIO()
                data.save(buffer, format="PNG" if name.endswith("png") else "JPEG")
                data = buffer.getvalue()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    dataset = build_dataset(DataSourceConfig("inpaint_mask", "webdataset", str(tmp_path / "one.tar"),
                                             "mask_inpaint", resolution=R))
    example = dataset[0]
    assert example["prompt"] == "a dog" and example["key"] == "one.tar/sub/a"
    assert example["mask"].sum() > 0
