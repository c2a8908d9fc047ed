"""`mtu eval` end to end on the shipped toy-world model, offline, with tiny random metric networks: every task, a run
killed half way and resumed, bad inputs refused before any image is generated; and, marked slow, the real networks
when their weights are present (issue 16, points 1-4)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mtu.cli import main
from mtu.errors import InputError
from mtu.evaluation import evaluate, format_table
from mtu.evaluation.weights import ENV_VAR, WEIGHT_FILES

FAST = ["--steps", "2", "--metric-weights", "random"]
REAL_NAMES = ("fid", "kid", "clip_score", "clip_directional", "clip_image", "clip_image_directional", "lpips",
              "lpips_inside", "lpips_outside")


def run_eval(capsys, *args) -> tuple[int, str, str]:
    code = main(["eval", "--model", "toyworld", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("task, count, expected", [
    ("t2i", 9, ("oracle_exact", "fd_random_net", "kd_random_net", "clip_score_random_net")),
    ("edit", 4, ("oracle_success", "clip_directional_random_net", "clip_image_random_net")),
    ("sr", 4, ("oracle_psnr", "lpips_random_net", "psnr", "ssim")),
    ("inpaint", 4, ("oracle_success", "clip_image_directional_random_net", "lpips_inside_random_net",
                    "lpips_outside_random_net")),
])
def test_eval_runs_end_to_end_with_random_networks_marked_as_such(tmp_path, capsys, task, count, expected):
    code, out, err = run_eval(capsys, "--task", task, "--num-samples", str(count), "--out", str(tmp_path), *FAST)
    assert code == 0, err
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(expected) <= set(results["metrics"]) and list(results["metrics"])[0] == expected[0]
    assert results["random_networks"] and results["scored"] == count == results["generated"]
    assert all(isinstance(entry["value"], float) for entry in results["metrics"].values())
    assert not set(REAL_NAMES) & set(results["metrics"])  # random networks never give a number named FID, ...
    assert "(random net)" in out and "| FID" not in out and " LPIPS ↓" not in out
    assert len(list((tmp_path / "images").glob("*.png"))) == count
    assert {"torch", "torchmetrics", "transformers"} <= set(results["versions"])


class Stop(Exception):
    pass


def test_a_killed_evaluation_resumes_and_gives_the_same_result(tmp_path):
    options = dict(num_samples=8, batch_size=4, steps=2, metric_weights="random")

    def stop_after_six(index, path):  # half way through the second batch
        if index == 5:
            raise Stop

    with pytest.raises(Stop):
        evaluate("toyworld", "sr", "toyworld", out=tmp_path / "killed", on_image=stop_after_six, **options)
    assert len(list((tmp_path / "killed" / "images").glob("*.png"))) == 6
    resumed = evaluate("toyworld", "sr", "toyworld", out=tmp_path / "killed", **options)
    assert resumed["generated"] == 2  # only the missing ones
    whole = evaluate("toyworld", "sr", "toyworld", out=tmp_path / "whole", **options)
    assert whole["generated"] == 8
    assert resumed["metrics"] == whole["metrics"]
    for index in range(8):
        name = f"images/{index:06d}.png"
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


def test_too_few_samples_for_fid_are_refused_unless_forced(tmp_path, capsys):
    code, _, err = run_eval(capsys, "--task", "t2i", "--num-samples", "4", "--out", str(tmp_path), *FAST)
    assert code == 2 and "too few for FD (random net)" in err and "--force" in err
    assert not (tmp_path / "images").exists()  # refused before any image was generated
    code, out, err = run_eval(capsys, "--task", "t2i", "--num-samples", "4", "--out", str(tmp_path), "--force",
                              *FAST)
    assert code == 0, err
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["metrics"]["fd_random_net"]["forced"] is True
    assert "*" in out and "forced below" in out


@pytest.mark.parametrize("args, message", [
    (["--task", "colorize"], "`task` 'colorize' is not a task of the model"),
    (["--task", "sr", "--num-samples", "0"], "`num_samples` must be an integer >= 1, got 0"),
    (["--task", "sr", "--data", "no/such/folder"], "--data: 'no/such/folder' does not exist"),
    (["--task", "sr", "--metric-weights", "EMPTY"], "has no alexnet-owt-7be5be79.pth"),
])
def test_bad_inputs_are_one_line_before_any_image(tmp_path, capsys, args, message):
    (tmp_path / "EMPTY").mkdir()
    args = [str(tmp_path / "EMPTY") if arg == "EMPTY" else arg for arg in args]
    code, _, err = run_eval(capsys, *args, "--out", str(tmp_path / "out"), "--steps", "2")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out" / "images").exists()


def test_a_task_without_metrics_outside_the_toy_world_is_refused():
    from mtu.evaluation.data import EvalData
    from mtu.evaluation.runner import _task_metrics

    source = EvalData({"kind": "source"}, 1, lambda index: None)
    with pytest.raises(InputError, match="task 'inpaint_mask' names no metrics"):
        _task_metrics("inpaint_mask", source)
    assert [metric.name for metric in _task_metrics("sr", source)] == ["lpips", "psnr", "ssim"]


def test_missing_weights_named_by_the_environment_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    code, _, err = run_eval(capsys, "--task", "edit", "--num-samples", "2")
    assert code == 2 and f"${ENV_VAR}: {tmp_path.resolve()} has no {WEIGHT_FILES['clip'].name}" in err


def test_resume_refuses_other_settings_unless_overwrite(tmp_path):
    options = dict(num_samples=2, steps=2, metric_weights="random", out=tmp_path)
    evaluate("toyworld", "sr", "toyworld", **options)
    with pytest.raises(InputError, match="another evaluation .*seed"):
        evaluate("toyworld", "sr", "toyworld", seed=1, **options)
    again = evaluate("toyworld", "sr", "toyworld", seed=1, overwrite=True, **options)
    assert again["generated"] == 2


def test_eval_reads_a_data_source_as_training_does(tmp_path):
    from mtu.toyworld.evaluate import evaluation_set

    folder = tmp_path / "highres"
    folder.mkdir()
    rows = []
    for index, example in enumerate(evaluation_set("sr", 3)):
        example.target.save(folder / f"{index}.png")
        rows.append(json.dumps({"image": f"{index}.png"}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    source = tmp_path / "source.yaml"
    source.write_text(f"format: folder\ntask: sr\npath: {folder}\nschema: sr_highres\nresolution: 32\n")
    results = evaluate("toyworld", "sr", str(source), steps=2, metric_weights="random")
    assert results["data"]["kind"] == "source" and results["scored"] == 3
    assert set(results["metrics"]) == {"lpips_random_net", "psnr", "ssim"}  # no oracle outside the toy world
    assert "| sr PSNR ↑ |" in format_table([results]) and "| sr PSNR ↑ | " in format_table([results], rows="metric")


def test_metrics_without_what_they_compare_with_are_skipped_and_said_so(tmp_path):
    source = tmp_path / "toy.yaml"  # toy-world inpaint pairs read as a data source: no mask reaches the example
    source.write_text("format: toyworld\ntask: inpaint\nsplit: test\ncount: 2\n")
    results = evaluate("toyworld", "inpaint", str(source), steps=2, metric_weights="random")
    assert "masks" in results["metrics"]["lpips_inside_random_net"]["skipped"]
    assert isinstance(results["metrics"]["clip_image_directional_random_net"]["value"], float)
    assert "n/a: inpaint LPIPS in (random net): some examples have no masks" in format_table([results])


def real_weights() -> Path | None:
    folder = os.environ.get(ENV_VAR)
    if not folder or not all((Path(folder) / entry.name).exists() for entry in WEIGHT_FILES.values()):
        return None
    return Path(folder)


@pytest.mark.slow
@pytest.mark.skipif(real_weights() is None, reason=f"set {ENV_VAR} to a folder holding "
                    f"{', '.join(entry.name for entry in WEIGHT_FILES.values())} (docs/EVAL.md) to run the real "
                    f"metric networks")
@pytest.mark.parametrize("task", ["t2i", "edit", "sr", "inpaint"])
def test_eval_with_the_real_metric_networks(tmp_path, task):
    if task == "t2i":
        from mtu.evaluation.weights import require_torch_fidelity

        try:
            require_torch_fidelity()
        except InputError as error:
            pytest.skip(str(error))
    results = evaluate("toyworld", task, "toyworld", num_samples=16, steps=10, out=tmp_path, force=True)
    assert not results["random_networks"]
    names = {"t2i": {"fid", "kid", "clip_score"}, "edit": {"clip_directional", "clip_image"},
             "sr": {"lpips", "psnr", "ssim"}, "inpaint": {"clip_image_directional", "lpips_inside", "lpips_outside"}}
    assert names[task] <= set(results["metrics"])
    for name in names[task]:
        value = results["metrics"][name]["value"]
        assert value is not None and value == value
    if task == "sr":
        assert 0 <= results["metrics"]["lpips"]["value"] < 1
