"""`collate_examples` batches examples of mixed tasks, zero-filling absent conditions and masks."""

from __future__ import annotations

import torch

from mtu.data import DataSourceConfig, build_dataset, collate_examples

from .data_builders import records_for, write_source

R = 16


def test_collate_mixed_tasks_drops_none(tmp_path):
    sources = {"t2i": ("captions", "folder"), "edit": ("instructpix2pix", "webdataset"),
               "inpaint_mask": ("mask_inpaint", "hf"), "sr": ("sr_highres", "folder")}
    examples = []
    for task, (schema, fmt) in sources.items():
        path = write_source(tmp_path / schema, fmt, records_for(schema, 1))
        config = DataSourceConfig(task, "hf" if fmt == "hf" else fmt, str(path), schema, resolution=R)
        examples.append(build_dataset(config)[0])
    batch = collate_examples([examples[0], None, *examples[1:]])
    assert batch["task"] == ["t2i", "edit", "inpaint_mask", "sr"]
    assert batch["target"].shape == (4, 3, R, R) and batch["condition"].shape == (4, 3, R, R)
    assert batch["mask"].shape == (4, 1, R, R)
    assert torch.all(batch["condition"][0] == 0) and torch.all(batch["mask"][[0, 1, 3]] == 0)
    assert torch.equal(batch["condition"][1], examples[1]["condition"])
    assert torch.equal(batch["mask"][2], examples[2]["mask"])
    assert batch["prompt"] == ["text 0", "make it red 0", "a dog 0", ""]
    assert batch["key"] == [example["key"] for example in examples]
    assert batch["output_caption"] == ["", "a red photo 0", "", ""]
    assert collate_examples([None, None]) is None
