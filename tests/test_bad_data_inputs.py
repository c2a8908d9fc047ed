"""Unusual or damaged data decodes right or fails with one clear line naming the file: 16-bit PNG, CMYK JPEG, EXIF
rotation, a 1x1 image, a decompression bomb, a non-UTF-8 metadata line, tar shards cut short or missing a member.
Each failure is an `InputError` (at open or in `validate_source`) or a per-sample `SampleError` that training
counts and `mtu data validate` lists."""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
import types

import numpy as np
import pytest
from PIL import Image

from mtu import InputError
from mtu.data import (DataSourceConfig, SampleError, build_dataset, check_failure_rate, format_validation,
                      validate_source)
from mtu.data.imaging import open_image
from mtu.training.data_feed import DataFeed

from .data_builders import CORRUPT, make_image, png_bytes, write_folder, write_webdataset

R = 16


def folder_source(tmp_path, records, schema="captions", task="t2i", **overrides) -> DataSourceConfig:
    path = write_folder(tmp_path / "src", records)
    return DataSourceConfig(task, "folder", str(path), schema, resolution=R, **overrides)


def captions_with(image, count: int = 1) -> list[dict]:
    return [{"image": image, "text": f"text {index}"} for index in range(count)]


def run_config(config: DataSourceConfig):
    """What `DataFeed` reads of a `TrainConfig`."""
    return types.SimpleNamespace(data=[config.to_dict()], cache_dir=None, batch_size=2,
                                 gradient_accumulation_steps=1, seed=0, task_sampling="stratified", max_steps=2,
                                 num_workers=0)


def read_all(dataset) -> None:
    for index in range(len(dataset)):
        dataset.get(index, 0)


def saved(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return buffer.getvalue()


# -- decoding -------------------------------------------------------------------------------------------------------
def test_16bit_png_mid_grey_decodes_mid_grey(tmp_path):
    """Before: PIL's I;16 -> RGB clips at 255, so 16-bit mid-grey (32768) decoded as white."""
    grey = Image.fromarray(np.full((24, 32), 32768, dtype=np.uint16))
    data = saved(grey, format="PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    assert np.asarray(open_image(data)).tolist()[0][0] == [128, 128, 128]
    example = build_dataset(folder_source(tmp_path, captions_with(data)))[0]
    assert example["target"].abs().max() < 0.01  # mid-grey is 0 in [-1, 1]; white would be 1
    report = validate_source(folder_source(tmp_path, captions_with(data)))
    assert report["ok"] and report["num_readable"] == 1


def test_32bit_integer_and_float_images():
    ramp = np.array([[0, 257 * 100, 65535]], dtype=np.int32)
    assert np.asarray(open_image(Image.fromarray(ramp), mode="L")).tolist() == [[0, 100, 255]]
    with pytest.raises(SampleError, match=r"mode I\) with values -5\.\.70000 has no known range"):
        open_image(Image.fromarray(np.array([[-5, 70000]], dtype=np.int32)))
    with pytest.raises(SampleError, match=r"32-bit float image \(PIL mode F\) has no known value range"):
        open_image(Image.fromarray(np.zeros((2, 2), dtype=np.float32)))


def test_cmyk_jpeg_decodes_to_its_colours():
    """Already right before (PIL inverts Adobe CMYK); kept as a guard."""
    data = saved(Image.new("RGB", (8, 8), (200, 100, 50)).convert("CMYK"), format="JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    assert np.abs(np.asarray(open_image(data), dtype=int)[0, 0] - [200, 100, 50]).max() <= 3


def test_exif_rotated_jpeg_is_upright(tmp_path):
    """Before: the EXIF orientation was ignored, so a portrait photo trained sideways."""
    landscape = Image.new("RGB", (32, 24), (0, 0, 0))
    landscape.paste((255, 255, 255), (0, 0, 16, 24))  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    data = saved(landscape, format="JPEG", quality=95, exif=exif.tobytes())
    upright = open_image(data)
    assert upright.size == (24, 32)
    array = np.asarray(upright, dtype=int)
    assert array[:16].mean() > 200 and array[16:].mean() < 50  # the white half is now on top
    assert build_dataset(folder_source(tmp_path, captions_with(data)))[0] is not None


@pytest.mark.parametrize("schema, task", [("captions", "t2i"), ("sr_highres", "sr"), ("mask_inpaint", "inpaint_mask")])
def test_one_pixel_image(tmp_path, schema, task):
    """Already right before; kept as a guard (resize, degradation and mask of a 1x1 image)."""
    pixel = Image.new("RGB", (1, 1), (10, 200, 30))
    record = {"captions": {"image": pixel, "text": "a dot"}, "sr_highres": {"image": pixel},
              "mask_inpaint": {"image": pixel, "mask": Image.new("L", (1, 1), 255), "prompt": "a dot"}}[schema]
    example = build_dataset(folder_source(tmp_path, [record], schema, task))[0]
    assert example["target"].shape == (3, R, R)
    if "condition" in example:
        assert example["condition"].shape == (3, R, R)


@pytest.mark.parametrize("limit, pattern", [(500, "DecompressionBombWarning"), (300, "DecompressionBombError")])
def test_decompression_bomb_is_refused_in_one_line(monkeypatch, tmp_path, limit, pattern):
    """Before: a warning-sized bomb was decoded; an error-sized one raised PIL's own DecompressionBombError."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)  # 32 x 24 = 768 pixels: over `limit` (or twice it)
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bytes(make_image(0)))
    with pytest.raises(InputError, match=rf"^{path}: refused, as a possible decompression bomb: Image size \(768 "
                                         rf"pixels\) exceeds limit"):
        open_image(path)
    report = validate_source(folder_source(tmp_path, captions_with(make_image(0), 2)))
    assert report["num_failed"] == 2 and "decompression bomb" in report["failures"][0]["error"]


@pytest.mark.parametrize("data, pattern", [
    (CORRUPT, r"image bytes \(20 bytes\): not an image in a format PIL reads"),
    (png_bytes(make_image(0))[:200], r"image bytes \(200 bytes\): cannot decode the image \(OSError: image file is "
                                     r"truncated"),
])
def test_corrupt_image_bytes(data, pattern):
    with pytest.raises(SampleError, match=pattern):
        open_image(data)


def test_missing_image_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        open_image("nothere.png", str(tmp_path))


# -- metadata.jsonl --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("line, pattern", [
    (b'{"image": "images/000_image_0.png", "text": "caf\xe9"}', r"line 2: not UTF-8 \(invalid continuation byte: "
                                                                  r"byte 0xe9 at position 48\); save the file as UTF-8"),
    (b'{"image": "x.png", "text": }', r"line 2: not JSON \(Expecting value at column 28\)"),
    (b'["images/000_image_0.png", "text"]', r"line 2: not a JSON object, got list"),
])
def test_bad_metadata_line_fails_its_sample_naming_file_and_line(tmp_path, line, pattern):
    """Before: a non-UTF-8 byte anywhere failed the whole source with a UnicodeDecodeError naming no file."""
    config = folder_source(tmp_path, captions_with(make_image(0), 3))
    metadata = tmp_path / "src" / "metadata.jsonl"
    lines = metadata.read_bytes().splitlines()
    metadata.write_bytes(b"\n".join([lines[0], line, lines[2]]) + b"\n")
    report = validate_source(config)
    assert (report["num_samples"], report["num_readable"], report["num_failed"]) == (3, 2, 1)
    [failure] = report["failures"]
    assert failure["key"] == "metadata.jsonl:2"
    assert failure["error"].startswith(f"SampleError: {metadata} line 2: ")
    assert re.search(pattern, failure["error"]), failure["error"]


def test_text_cell_of_the_wrong_type_is_a_counted_failure(tmp_path):
    dataset = build_dataset(folder_source(tmp_path, [{"image": make_image(0), "text": 42}]))
    assert dataset[0] is None
    assert dataset.failures.examples[0][1] == "SampleError: text column 'text' holds a int, not a string: '42'"


# -- webdataset shards -----------------------------------------------------------------------------------------------
def shard_of(tmp_path, count: int = 4) -> tuple[DataSourceConfig, bytes]:
    root = write_webdataset(tmp_path / "wds", [{"image": make_image(i), "text": f"text {i}"}
                                               for i in range(count)], per_shard=count)
    shard = root / "shard-000000.tar"
    return DataSourceConfig("t2i", "webdataset", str(root), "captions", resolution=R), shard


def member_ends(shard) -> list[tuple[str, int, int]]:
    with tarfile.open(shard) as archive:
        return [(member.name, member.offset_data, member.offset_data + member.size) for member in archive]


def test_shard_cut_at_a_member_boundary_is_reported(tmp_path):
    """Before: a shard without its end-of-archive blocks validated as OK with the samples before the cut."""
    config, shard = shard_of(tmp_path)
    name, cut = cut_after_sample(shard, 2)
    report = validate_source(config)
    assert report["num_samples"] == 2 and report["num_failed"] == 0 and report["ok"] is False
    [problem] = report["problems"]
    assert problem == (f"shard {shard}: no end-of-archive block after byte {cut} (the file ends there): cut short after "
                       f"member {name}; samples after it are missing")
    assert "SOURCE DEFECTIVE" in format_validation(report)


def test_shard_with_a_truncated_member_is_reported(tmp_path):
    """Before: the whole source failed to open with "cannot index shard ... unexpected end of data"."""
    config, shard = shard_of(tmp_path)
    name, start, _ = member_ends(shard)[4]  # 000002.png
    shard.write_bytes(shard.read_bytes()[:start + 100])
    report = validate_source(config)
    assert (report["num_samples"], report["num_readable"], report["num_failed"]) == (3, 2, 1)
    assert report["problems"][0].endswith(f"member {name} is cut short (100 of {member_ends_size(name)} bytes); "
                                          f"samples after it are missing")
    assert "is cut short: 100 of" in report["failures"][0]["error"]


def cut_after_sample(shard, samples: int) -> tuple[str, int]:
    """Cuts `shard` at the block boundary after its first `samples` samples (two members each); returns the last
    member kept and the cut's byte offset."""
    name, _, end = member_ends(shard)[2 * samples - 1]
    cut = (end + 511) // 512 * 512
    shard.write_bytes(shard.read_bytes()[:cut])
    return name, cut


def member_ends_size(name: str) -> int:
    return len(png_bytes(make_image(int(name.split(".")[0]))))


def test_training_refuses_a_shard_cut_short_in_one_line(tmp_path):
    config, shard = shard_of(tmp_path)
    cut_after_sample(shard, 2)
    with pytest.raises(InputError, match=rf"^data\[0\]: shard {shard}: no end-of-archive block .* `mtu data "
                                         rf"validate` lists every defect"):
        DataFeed(run_config(config), 0, 1)


def test_tar_sample_missing_a_member_is_reported(tmp_path):
    root = tmp_path / "wds"
    root.mkdir()
    with tarfile.open(root / "a.tar", "w") as archive:
        for name, data in (("000000.png", png_bytes(make_image(0))), ("000000.txt", b"a caption"),
                           ("000001.png", png_bytes(make_image(1)))):  # sample 000001 lost its text
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    report = validate_source(DataSourceConfig("t2i", "webdataset", str(root), "captions", resolution=R))
    assert (report["num_readable"], report["num_failed"], report["ok"]) == (1, 1, False)
    assert report["failures"] == [{"key": "a.tar/000001", "error": "SampleError: column 'text' (role 'prompt') is "
                                   "missing or null in this sample; its members: 000001.png"}]


def test_tar_text_member_not_utf8(tmp_path):
    root = tmp_path / "wds"
    root.mkdir()
    with tarfile.open(root / "a.tar", "w") as archive:
        for name, data in (("000000.png", png_bytes(make_image(0))), ("000000.txt", b"caf\xe9")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    report = validate_source(DataSourceConfig("t2i", "webdataset", str(root), "captions", resolution=R))
    assert report["failures"][0]["error"] == (f"SampleError: member 000000.txt of {root / 'a.tar'}: not UTF-8 "
                                              f"(unexpected end of data at byte 3)")


@pytest.mark.parametrize("content", ["gzip", "text"])
def test_a_shard_that_is_not_an_uncompressed_tar_is_one_line(tmp_path, content):
    config, shard = shard_of(tmp_path)
    shard.write_bytes(gzip.compress(shard.read_bytes()) if content == "gzip" else b"hello\n" * 200)
    with pytest.raises(InputError, match=rf"^path: cannot read shard '{shard}' as a tar file \(uncompressed .tar "
                                         rf"shards only\)"):
        validate_source(config)


# -- failure accounting ----------------------------------------------------------------------------------------------
def test_failure_limit_holds_across_a_resume(tmp_path):
    """Before: `load_state` kept the counts in `resumed_failures`, which nothing read: every resume began at zero."""
    records = captions_with(make_image(0), 10)
    for record in records[:2]:
        record["image"] = CORRUPT
    config = folder_source(tmp_path, records, max_failure_fraction=0.15)
    first = DataFeed(run_config(config), 0, 1)
    read_all(first.datasets[0])
    assert check_failure_rate(first.datasets[0]) == 0.2  # 2 of 10: too few reads for a verdict
    resumed = DataFeed(run_config(config), 0, 1)
    resumed.load_state(json.loads(json.dumps(first.state())))  # as the checkpoint stores it
    read_all(resumed.datasets[0])
    with pytest.raises(InputError, match=r"4 of 20 samples unreadable \(20.0% > max_failure_fraction=0.15\)"):
        check_failure_rate(resumed.datasets[0])


def test_a_checkpoint_from_before_keeps_its_counts(tmp_path):
    config = folder_source(tmp_path, captions_with(make_image(0), 2))
    feed = DataFeed(run_config(config), 0, 1)
    feed.load_state({"failures": {config.path: [3, 30]}})  # the layout before issue 13
    assert (feed.datasets[0].failures.count, feed.datasets[0].failures.attempts) == (3, 30)
    with pytest.warns(UserWarning, match="failure counts start again from zero"):
        feed.load_state({"failures": {"/another/source": [3, 30]}})


def test_too_many_failures_is_one_line_input_error(tmp_path):
    """Before: a RuntimeError, which the narrowed CLI would print as a bug."""
    config = folder_source(tmp_path, captions_with(CORRUPT, 2))
    dataset = build_dataset(config)
    for _ in range(10):
        read_all(dataset)
    with pytest.raises(InputError, match=rf"^data source '{config.path}' \(task 't2i'\): 20 of 20 samples unreadable"):
        check_failure_rate(dataset)
