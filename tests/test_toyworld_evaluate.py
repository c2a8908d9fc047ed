"""Held-out evaluation sets are fixed, exact targets score perfectly, and the trivial baselines score as such."""

import pytest

from mtu.toyworld.evaluate import TASKS, baseline_outputs, evaluation_set, score


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
