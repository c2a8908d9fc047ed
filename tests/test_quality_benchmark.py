"""The quality benchmark's bookkeeping: runs made at different times join into one table only when their budgets
match, each (row, seed) counts once, and MTU N=4 is judged against the issue's target from the measured means."""

import json
from pathlib import Path

import pytest

from .scripts import load_benchmark


@pytest.fixture(scope="module")
def quality():
    return load_benchmark("toyworld_quality")


ARGS = {"steps": 1600, "batch_size": 16, "lr": 2e-3, "full_lr": 2e-4, "tune_count": 32, "eval_count": 32,
        "base": None}


def _run(seed, lr, trainable=10, **main):
    metric = {"t2i": "faithfulness", "edit": "success", "sr": "psnr", "inpaint": "success"}
    return {"seed": seed, "lr": lr, "trainable": trainable,
            "scores": {task: {metric[task]: value} for task, value in main.items()}}


def _write(path: Path, results: dict, seeds="0", **args) -> str:
    path.write_text(json.dumps({"args": {**ARGS, "seeds": seeds, **args}, "results": results}))
    return str(path)


def test_merge_joins_seeds_and_judges_the_target(quality, tmp_path):
    first = _write(tmp_path / "a.json", {
        "single:sr": [_run(0, 2e-4, sr=24.0)], "single:t2i": [_run(0, 2e-4, t2i=0.80)],
        "mtu-n4": [_run(0, 2e-3, t2i=0.70, sr=23.0)], "lora": [_run(0, 2e-3, t2i=0.75, sr=22.0)]})
    second = _write(tmp_path / "b.json", {"mtu-n4": [_run(1, 2e-3, t2i=0.90, sr=23.4)]}, seeds="1")
    results = quality.merge([second, first])
    assert list(results) == ["single:t2i", "single:sr", "mtu-n4", "lora"]  # the script's row order
    assert [run["seed"] for run in results["mtu-n4"]] == [0, 1]
    text = quality.table(results)
    assert "| mtu-n4 | 10 | 0.002 | 1600 | 0,1 | 0.800 +- 0.141 |" in text
    assert "t2i: mtu/single 1.000 (within 5%); vs lora +0.050 (ahead)" in text
    assert "sr: mtu/single 0.967 (within 5%)" in text  # 23.2 / 24.0
    assert "vs lora +1.200 (ahead)" in text


def test_merge_refuses_other_budgets_and_repeated_seeds(quality, tmp_path):
    first = _write(tmp_path / "a.json", {"mtu-n4": [_run(0, 2e-3, t2i=0.7)]})
    longer = _write(tmp_path / "b.json", {"lora": [_run(0, 2e-3, t2i=0.7)]}, steps=3200)
    with pytest.raises(SystemExit, match="b.json was run with .*'steps': 3200"):
        quality.merge([first, longer])
    again = _write(tmp_path / "c.json", {"mtu-n4": [_run(0, 2e-3, t2i=0.8)]})
    with pytest.raises(SystemExit, match="row mtu-n4 seed 0 appears twice"):
        quality.merge([first, again])
    with pytest.raises(SystemExit, match="missing.json is not a readable quality.json"):
        quality.merge([first, str(tmp_path / "missing.json")])
    other_rate = _write(tmp_path / "d.json", {"mtu-n4": [_run(1, 1e-3, t2i=0.8)]}, seeds="1")
    with pytest.raises(SystemExit, match="row mtu-n4 was run at several learning rates"):
        quality.merge([first, other_rate])


def test_files_without_seed_or_rate_take_them_from_their_arguments(quality, tmp_path):
    old = {"mtu-n4": [{"trainable": 10, "scores": {"t2i": {"faithfulness": 0.5}}},
                      {"trainable": 10, "scores": {"t2i": {"faithfulness": 0.7}}}]}
    results = quality.merge([_write(tmp_path / "old.json", old, seeds="3,5")])
    assert [(run["seed"], run["lr"]) for run in results["mtu-n4"]] == [(3, 2e-3), (5, 2e-3)]


def test_per_task_budget_trains_multi_task_rows_longer(quality):
    assert quality.row_steps("single:sr", 1600, "per-task") == 1600
    assert quality.row_steps("mtu-n4", 1600, "per-task") == 6400
    assert quality.row_steps("mtu-n4-alone:sr", 1600, "per-task") == 1600
    assert quality.row_steps("mtu-n4", 1600, "per-row") == 1600


def test_merge_keeps_one_budget_mode_for_multi_task_rows(quality, tmp_path):
    # A per-row file's single-task rows join a per-task table; its multi-task rows do not.
    old = _write(tmp_path / "old.json", {"single:sr": [_run(0, 2e-4, sr=26.0)], "mtu-n4": [_run(0, 2e-3, sr=24.0)]})
    new = _write(tmp_path / "new.json", {"mtu-n4": [{**_run(1, 2e-3, sr=27.0), "steps": 6400}]}, seeds="1",
                 budget="per-task")
    with pytest.raises(SystemExit, match="multi-task rows at --budget per-task, but .*old.json at per-row"):
        quality.merge([old, new])
    text = quality.table(quality.merge([old + "@single:sr+base", new]))
    assert "| single:sr | 10 | 0.0002 | 1600 | 0 |" in text and "| mtu-n4 | 10 | 0.002 | 6400 | 1 |" in text
    assert "sr: mtu/single 1.038 (within 5%)" in text
    only_single = _write(tmp_path / "single.json", {"single:sr": [_run(0, 2e-4, sr=26.0)]})
    assert list(quality.merge([only_single, new])) == ["single:sr", "mtu-n4"]


def test_merge_rows_filter_and_device(quality, tmp_path):
    old = _write(tmp_path / "old.json", {"single:sr": [_run(0, 2e-4, sr=26.0)], "mtu-n4": [_run(0, 2e-3, sr=24.0)]})
    new = _write(tmp_path / "new.json", {"mtu-n4": [{**_run(1, 2e-3, sr=27.0), "steps": 6400}]}, seeds="1",
                 budget="per-task")
    results = quality.merge([old, new], rows=["single:sr"])
    assert list(results) == ["single:sr"]
    with pytest.raises(SystemExit, match=r"unknown rows \['single:s'\] after '@'"):
        quality.merge([old + "@single:s"])
    alone = quality.table(quality.merge([new]))
    assert "| mtu-n4 |" in alone and "against the target" not in alone  # nothing to judge it against
    gpu = _write(tmp_path / "gpu.json", {"single:sr": [_run(1, 2e-4, sr=26.0)]}, seeds="1", device="NVIDIA H200")
    with pytest.raises(SystemExit, match="gpu.json was run with .*'device': 'NVIDIA H200'"):
        quality.merge([old, gpu])
