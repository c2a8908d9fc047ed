"""Held-out evaluation sets are fixed, exact targets score perfectly, and the trivial baselines score as such."""

import json

import pytest

from mtu.toyworld.evaluate import TASKS, baseline_outputs, evaluation_set, score, score_examples


@pytest.mark.parametrize("task", TASKS)
def test_sets_are_fixed_and_exact_targets_score_perfectly(task):
    examples = evaluation_set(task, 24)
    again = evaluation_set(task, 24)
    assert [(e.prompt, e.target.tobytes()) for e in examples] == [(e.prompt, e.target.tobytes()) for e in again]
    perfect = score(examples, [example.target for example in examples])
    if task == "sr":
        assert perfect["psnr"] == pytest.approx(100.0) or perfect["psnr"] == float("inf")
        assert perfect["ssim"] == pytest.approx(1.0)
    else:
        main = "faithfulness" if task == "t2i" else "success"
        assert perfect[main] == 1.0


def test_trivial_baselines():
    assert baseline_outputs(evaluation_set("t2i", 4)) is None
    for task in ("edit", "inpaint"):
        examples = evaluation_set(task, 24)
        scores = score(examples, baseline_outputs(examples))
        assert scores["success"] == 0.0  # doing nothing never carries out an instruction
        assert 10 < scores["fidelity_psnr"] < 100
    examples = evaluation_set("sr", 24)
    bicubic = score(examples, baseline_outputs(examples))
    assert 15 < bicubic["psnr"] < 40 and 0 < bicubic["ssim"] < 1
    assert examples[0].image.size == (16, 16) and examples[0].target.size == (32, 32)


def test_bad_task_is_refused():
    with pytest.raises(ValueError, match="`task` must be one of"):
        evaluation_set("colourise", 4)


@pytest.mark.parametrize("task", TASKS)
def test_validation_split_is_fixed_and_apart_from_the_held_out_one(task):
    validation = evaluation_set(task, 16, split="validation")
    assert [e.prompt for e in validation] == [e.prompt for e in evaluation_set(task, 16, split="validation")]
    source = lambda example: example.edit.before if example.edit else example.target_scene  # noqa: E731
    held_out = {source(e) for e in evaluation_set(task, 200)}  # the scenes drawn (an edit's target may be any)
    assert not held_out & {source(e) for e in validation}
    assert score(validation, [e.target for e in validation])[
        {"t2i": "faithfulness", "edit": "success", "sr": "psnr", "inpaint": "success"}[task]] > 0


def test_bad_split_is_refused():
    with pytest.raises(ValueError, match="`split` must be 'test' or 'validation', got 'train'"):
        evaluation_set("edit", 2, split="train")


@pytest.mark.parametrize("task", TASKS)
def test_score_examples_keeps_the_main_metric_of_every_example(task):
    examples = evaluation_set(task, 6)
    outputs = baseline_outputs(examples) or [example.target for example in examples]
    kept = score_examples(examples, outputs)
    metric = {"t2i": "faithfulness", "edit": "success", "sr": "psnr", "inpaint": "success"}[task]
    assert len(kept["main"]) == len(kept["records"]) == 6
    assert sum(kept["main"]) / 6 == pytest.approx(min(score(examples, outputs)[metric], 100.0))
    assert all(isinstance(value, float if task == "sr" else bool) for value in kept["main"])
    assert kept["summary"]["exact"]["count"] == 6
    json.dumps({"main": kept["main"], "summary": kept["summary"]})  # what the quality benchmark saves
    with pytest.raises(ValueError, match="`outputs` must have one image per example"):
        score_examples(examples, outputs[:2])
