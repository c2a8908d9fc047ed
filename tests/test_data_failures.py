"""Corrupt samples give None and are counted (also from DataLoader workers); too many raise naming the files."""

from __future__ import annotations

import pytest
from torch.utils.data import DataLoader

from mtu import InputError
from mtu.data import DataSourceConfig, build_dataset, check_failure_rate, collate_examples

from .data_builders import CORRUPT, records_for, write_folder, write_source

R = 16


def corrupt_source(tmp_path, fmt: str = "folder", count: int = 4, **overrides) -> DataSourceConfig:
    """`count` caption records whose last image is garbage bytes."""
    records = records_for("captions", count)
    records[-1]["image"] = CORRUPT
    path = write_source(tmp_path / fmt, fmt, records)
    return DataSourceConfig("t2i", "hf" if fmt.startswith("hf") else fmt, str(path), "captions", resolution=R,
                            **overrides)


@pytest.mark.parametrize("fmt", ["folder", "hf_parquet", "webdataset"])
def test_corrupt_sample_is_none_and_counted(tmp_path, fmt):
    dataset = build_dataset(corrupt_source(tmp_path, fmt))
    assert all(dataset[index] is not None for index in range(3))
    assert dataset[3] is None
    assert (dataset.failures.count, dataset.failures.attempts) == (1, 4)
    [(key, message)] = dataset.failures.examples
    assert key == dataset.key(3)
    assert message.startswith("SampleError: column 'image': ") and message.endswith("not an image in a format PIL reads")


def test_folder_failure_names_the_file_and_missing_file(tmp_path):
    records = records_for("captions", 3)
    records[1]["image"] = CORRUPT
    path = write_folder(tmp_path / "src", records)
    (path / "images" / "002_image_0.png").unlink()
    dataset = build_dataset(DataSourceConfig("t2i", "folder", str(path), "captions", resolution=R))
    assert [dataset[index] is None for index in range(3)] == [False, True, True]
    assert dataset.failures.keys == ["images/001_image_0.png", "images/002_image_0.png"]
    assert "No such file" in dataset.failures.examples[1][1]


def test_bad_metadata_line_fails_only_its_sample(tmp_path):
    path = write_folder(tmp_path / "src", records_for("captions", 2))
    with open(path / "metadata.jsonl", "a") as handle:
        handle.write("{not json\n")
    dataset = build_dataset(DataSourceConfig("t2i", "folder", str(path), "captions", resolution=R))
    assert len(dataset) == 3 and dataset[2] is None and dataset.failures.keys == ["metadata.jsonl:3"]


def test_failure_rate_over_the_limit_raises_naming_path_and_files(tmp_path):
    config = corrupt_source(tmp_path)
    dataset = build_dataset(config)
    for _ in range(4):  # 16 attempts: under the minimum, no verdict yet
        [dataset[index] for index in range(4)]
    assert check_failure_rate(dataset) == pytest.approx(0.25)
    [dataset[index] for index in range(4)]
    with pytest.raises(InputError, match=r"folder.*5 of 20 samples.*max_failure_fraction=0.01.*"
                                           r"images/003_image_0.png"):
        check_failure_rate(dataset, config)
    lenient = DataSourceConfig.from_dict({**config.to_dict(), "max_failure_fraction": 0.3})
    assert check_failure_rate(dataset, lenient) == pytest.approx(0.25)


def test_workers_report_failures_and_follow_set_epoch(tmp_path):
    records = records_for("coco_captions", 6)
    records[-1]["image"] = CORRUPT
    path = write_folder(tmp_path / "coco", records)
    config = DataSourceConfig("t2i", "folder", str(path), "coco_captions", resolution=R)
    dataset = build_dataset(config)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_examples, persistent_workers=True)
    first = [prompt for batch in loader for prompt in batch["prompt"]]
    assert len(first) == 5
    assert (dataset.failures.count, dataset.failures.attempts) == (1, 6)  # counted in the workers, read here
    assert dataset.failures.keys == ["images/005_image_0.png"]
    # The persistent workers hold copies of the dataset made at epoch 0; set_epoch must still reach them.
    dataset.set_epoch(3)
    later = [prompt for batch in loader for prompt in batch["prompt"]]
    expected = [build_dataset(config, epoch_seed=3)[index]["prompt"] for index in range(5)]
    assert later == expected and later != first
