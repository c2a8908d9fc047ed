"""`validate_source` reports counts, failures, mapping and statistics, and refuses a missing column early."""

from __future__ import annotations

import pytest

from mtu.data import DataSourceConfig, format_validation, validate_source

from .data_builders import CORRUPT, make_image, records_for, write_folder, write_source

R = 16


def test_report_of_a_source_with_a_corrupt_file(tmp_path):
    records = records_for("instructpix2pix", 4)
    records[0]["edited_image"] = make_image(9, size=(40, 30))
    records[2]["original_image"] = CORRUPT
    del records[3]["input_caption"]
    path = write_folder(tmp_path / "ip2p", records)
    config = DataSourceConfig("edit", "folder", str(path), "instructpix2pix", resolution=R)
    report = validate_source(config)
    assert (report["num_samples"], report["num_checked"], report["num_readable"], report["num_failed"]) == (4, 4, 3, 1)
    assert report["failure_fraction"] == 0.25 and report["ok"] is False
    [failure] = report["failures"]
    assert failure["key"] == "images/002_edited_image_0.png" and "002_original_image_0.png" in failure["error"]
    assert report["columns"] == {"condition": "original_image", "target": "edited_image", "prompt": "edit_prompt",
                                 "input_caption": "input_caption", "output_caption": "output_caption"}
    assert report["optional_fields"] == {"input_caption": 2, "output_caption": 3}
    assert report["image_sizes"]["target"] == {"min_width": 32, "max_width": 40, "min_height": 24, "max_height": 30}
    assert report["text_lengths"]["prompt"] == {"min": 13, "max": 13, "mean": 13.0}
    text = format_validation(report)
    for expected in ("samples: 4, checked 4, readable 3, failed 1", "TOO MANY FAILURES", "prompt <- 'edit_prompt'",
                     "image target: width 32-40, height 24-30", "input_caption in 2/3",
                     "images/002_edited_image_0.png: "):
        assert expected in text


def test_limit_and_webdataset_layout(tmp_path):
    path = write_source(tmp_path / "wds", "webdataset", records_for("gqa_inpaint", 5))
    config = DataSourceConfig("inpaint", "webdataset", str(path), "gqa_inpaint", resolution=R)
    report = validate_source(config, limit=2)
    assert (report["num_samples"], report["num_checked"], report["num_readable"]) == (5, 2, 2)
    assert report["ok"] and report["failures"] == []
    assert "KEY.source_image.png" in report["webdataset_layout"]
    assert "expected shard layout" in format_validation(report)


def test_missing_column_raises_before_reading(tmp_path):
    path = write_folder(tmp_path / "bad", [{"image": CORRUPT, "notes": "x"}])
    config = DataSourceConfig("t2i", "folder", str(path), "captions", resolution=R)
    with pytest.raises(ValueError, match=r"schema 'captions' needs a 'prompt' column.*columns found: \['image', "
                                         r"'notes'\]"):
        validate_source(config)
