"""The long run's progress log (benchmarks/checkpoint_progress.py): each step against the previous one, paired on
the same examples, so that a plateau or a gain is told apart from sampling noise."""

import json

from .scripts import load_benchmark


def _row(step, task, outcomes, count=None, seed=0):
    value = sum(outcomes) / len(outcomes)
    return {"step": step, "task": task, "count": count or len(outcomes), "seed": seed, "main": "success",
            "summary": {"success": {"value": value, "low": 0.0, "high": 1.0}}, "per_example": outcomes}


def _no_model(monkeypatch) -> None:
    """Scoring a checkpoint reads no run, model or pipeline (the tests give `generate_outputs` their own)."""
    import types

    import mtu.toyworld.experiment as experiment
    import mtu.training.export as export

    monkeypatch.setattr(export, "checkpoint_run_config",
                        lambda folder: types.SimpleNamespace(model=types.SimpleNamespace(base="toyworld-base")))
    monkeypatch.setattr(export, "model_from_checkpoint", lambda folder: None)
    monkeypatch.setattr(experiment, "pipeline_for", lambda model, base: None)


def test_paired_steps_count_the_discordant_examples_of_consecutive_steps():
    progress = load_benchmark("checkpoint_progress")
    rows = [_row(18000, "edit", [True, True, True, False]), _row(12000, "edit", [True, False, False, False]),
            _row(12000, "edit", [True] * 8),  # another count: another set of examples, never paired with these
            _row(18000, "edit", [True, True, True, False])]  # a step scored twice is not paired with itself
    lines = progress.paired_steps(rows)
    body = [line for line in lines if line.startswith("| edit")]
    assert body == ["| edit | 12000 -> 18000 | 4 | +0.500 (+0.000 to +1.000) | 2 / 0 | 0.500 |"]


def test_paired_steps_since_pairs_every_later_step_with_that_one():
    progress = load_benchmark("checkpoint_progress")
    rows = [_row(12000, "edit", [False, False, False, True]), _row(18000, "edit", [True, False, False, True]),
            _row(22000, "edit", [True, True, False, True]), _row(29000, "edit", [True, True, True, True])]
    body = [line for line in progress.paired_steps(rows, since=18000) if line.startswith("| edit")]
    assert body == ["| edit | 18000 -> 22000 | 4 | +0.250 (+0.000 to +0.750) | 1 / 0 | 1.000 |",
                    "| edit | 18000 -> 29000 | 4 | +0.500 (+0.000 to +1.000) | 2 / 0 | 0.500 |"]
    assert progress.paired_steps(rows, since=5000) == []  # a step never scored pairs nothing


def test_table_reads_a_log_with_rows_from_before_the_outcomes_were_kept(tmp_path):
    progress = load_benchmark("checkpoint_progress")
    old = _row(7000, "edit", [True, False])
    del old["per_example"], old["seed"]
    log = tmp_path / "progress.jsonl"
    log.write_text("\n".join(json.dumps(row) for row in (old, _row(9000, "edit", [True, True]))) + "\n")
    text = progress.table(log)
    assert "| 7000 | edit | 2 | success 0.500" in text and "| 9000 | edit | 2 | success 1.000" in text
    assert "paired" not in text  # one step with outcomes: nothing to pair yet


def test_compare_logs_pairs_two_runs_per_step_and_per_edit_kind(tmp_path):
    from mtu.toyworld.evaluate import evaluation_set

    progress = load_benchmark("checkpoint_progress")
    kinds = [example.edit.kind for example in evaluation_set("edit", 8, split="validation")]
    moved = [kind == "move" for kind in kinds]  # three of the first eight
    assert 0 < sum(moved) < 8
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text(json.dumps(_row(25000, "edit", [False] * 8)) + "\n" + json.dumps(_row(24000, "sr", [1.0, 2.0])))
    second.write_text(json.dumps(_row(25000, "edit", moved)) + "\n" + json.dumps(_row(26000, "sr", [3.0, 3.0])))
    lines = progress.compare_logs(first, second).splitlines()
    n = sum(moved)
    assert f"| edit | 25000 | all | 8 | {n / 8:+.3f}" in lines[2]
    assert any(line.startswith(f"| edit | 25000 | move | {n} | +1.000 (+1.000 to +1.000) | {n} / 0 |")
               for line in lines)
    assert not any("| sr |" in line for line in lines)  # sr's steps differ: nothing to pair


def test_since_without_table_or_at_a_step_never_scored_is_refused_in_one_line(tmp_path, capsys):
    import pytest

    progress = load_benchmark("checkpoint_progress")
    log = tmp_path / "progress.jsonl"
    log.write_text(json.dumps(_row(9000, "edit", [True, False])) + "\n")
    for argv, message in ((["--since", "9000"], "--since 9000: only with --table LOG"),
                          (["--table", str(log), "--since", "5000"], "--since 5000: no row of")):
        with pytest.raises(SystemExit):
            progress.main(argv)
        assert message in capsys.readouterr().err



def test_step_offset_logs_a_restart_after_the_run_it_continues(tmp_path, monkeypatch, capsys):
    """A restart's checkpoint-0002000 scored with --step-offset 32000 is logged at step 34000 and pairs with the
    copied step-32000 row under --table --since 32000 (the model, here an oracle that returns every target)."""
    import pytest

    import mtu.toyworld.evaluate as evaluate

    progress = load_benchmark("checkpoint_progress")
    _no_model(monkeypatch)
    monkeypatch.setattr(evaluate, "generate_outputs", lambda pipe, examples, seed, **kwargs: [
        example.target for example in examples])
    log = tmp_path / "restart.jsonl"
    log.write_text(json.dumps(_row(32000, "edit", [False] * 4)) + "\n")
    checkpoint = tmp_path / "checkpoints" / "checkpoint-0002000"
    progress.main([str(checkpoint), "--tasks", "edit", "--count", "4", "--step-offset", "32000", "--log", str(log)])
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert [row["step"] for row in logged] == [32000, 34000]
    assert logged[1]["per_example"] == [True] * 4  # the oracle's outputs are every example's target
    capsys.readouterr()
    progress.main(["--table", str(log), "--since", "32000"])
    assert "| edit | 32000 -> 34000 | 4 | +1.000" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        progress.main([str(checkpoint), "--step-offset", "-1"])
    assert "--step-offset -1: must be 0 or more" in capsys.readouterr().err


def test_paired_steps_pair_sr_read_back_beside_its_psnr_when_both_rows_kept_it():
    progress = load_benchmark("checkpoint_progress")
    first = {**_row(48000, "sr", [30.0, 31.0, 32.0, 33.0]), "main": "psnr",
             "per_example_secondary": {"read_back": [False, False, True, True]}}
    second = {**_row(49500, "sr", [31.0, 32.0, 33.0, 34.0]), "main": "psnr",
              "per_example_secondary": {"read_back": [True, True, True, False]}}
    old = _row(40000, "sr", [29.0, 30.0, 31.0, 32.0])  # logged before the read-back was kept: PSNR alone
    body = [line for line in progress.paired_steps([old, first, second]) if line.startswith("| sr")]
    assert body[0].startswith("| sr | 40000 -> 48000 | 4 | +1.000")
    assert body[1].startswith("| sr | 48000 -> 49500 | 4 | +1.000")
    assert body[2] == "| sr read_back | 48000 -> 49500 | 4 | +0.250 (-0.500 to +1.000) | 2 / 1 | 1.000 |"
    assert len(body) == 3  # no read-back line for the old row, which did not keep it


def test_compare_logs_pair_sr_read_back_when_both_runs_kept_it(tmp_path):
    progress = load_benchmark("checkpoint_progress")
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text(json.dumps({**_row(49500, "sr", [30.0, 31.0]), "main": "psnr",
                                 "per_example_secondary": {"read_back": [False, True]}}) + "\n")
    second.write_text(json.dumps({**_row(49500, "sr", [31.0, 32.0]), "main": "psnr",
                                  "per_example_secondary": {"read_back": [True, True]}}) + "\n")
    lines = progress.compare_logs(first, second).splitlines()
    assert lines[2].startswith("| sr | 49500 | all | 2 | +1.000")
    assert lines[3] == "| sr | 49500 | read_back | 2 | +0.500 (+0.000 to +1.000) | 1 / 0 | 1.000 |"


def test_inference_steps_reach_the_sampler_and_the_logged_row(tmp_path, monkeypatch, capsys):
    import pytest

    import mtu.toyworld.evaluate as evaluate

    progress = load_benchmark("checkpoint_progress")
    calls = []
    _no_model(monkeypatch)

    def outputs(pipe, examples, seed, **kwargs):
        calls.append(kwargs)
        return [example.target for example in examples]

    monkeypatch.setattr(evaluate, "generate_outputs", outputs)
    log = tmp_path / "steps.jsonl"
    checkpoint = tmp_path / "checkpoints" / "checkpoint-0000100"
    progress.main([str(checkpoint), "--tasks", "sr", "--count", "2", "--inference-steps", "50", "--log", str(log)])
    progress.main([str(checkpoint), "--tasks", "sr", "--count", "2", "--log", str(log)])
    assert calls == [{"num_inference_steps": 50}, {}]  # sr samples without guidance; the default adds nothing
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert rows[0]["inference_steps"] == 50 and "inference_steps" not in rows[1]
    assert rows[0]["per_example_secondary"]["read_back"] == [True, True]  # the targets read back
    capsys.readouterr()
    with pytest.raises(SystemExit):
        progress.main([str(checkpoint), "--inference-steps", "0"])
    assert "--inference-steps 0: must be 1 or more" in capsys.readouterr().err


def test_across_seeds_counts_each_example_over_the_seeds_it_was_scored_under(tmp_path, capsys):
    progress = load_benchmark("checkpoint_progress")
    rows = []
    for seed, read in enumerate(([True, True, False, False], [True, False, False, False],
                                 [True, True, True, False])):  # example 0 every seed, 1 and 2 some, 3 none
        row = _row(40000, "sr", [30.0, 31.0, 32.0, 33.0], seed=seed)
        row["main"], row["per_example_secondary"] = "psnr", {"read_back": read}
        rows.append(row)
    rows.append(_row(40000, "edit", [True, False, True, False]))  # scored under one seed: no line
    log = tmp_path / "seeds.jsonl"
    log.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    assert progress.main(["--across-seeds", str(log)]) is None
    body = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| sr")]
    assert len(body) == 1  # the PSNR is not a rate: read-back only
    cells = [cell.strip() for cell in body[0].strip("|").split("|")]
    assert cells[:6] == ["sr", "40000", "4", "read_back", "3", "0.500 0.250 0.750"]
    assert cells[6].startswith("0.500 (")
    assert cells[7:] == ["0.250", "0.500", "0.250", "0.750"]


def test_compare_logs_pairs_held_out_rows_apart_from_validation_ones_with_the_held_out_kinds(tmp_path):
    """Rows scored on the held-out split pair only with held-out rows, labelled, and split by the held-out set's own
    edit kinds (which differ from the validation set's)."""
    from mtu.toyworld.evaluate import evaluation_set

    progress = load_benchmark("checkpoint_progress")
    kinds = [example.edit.kind for example in evaluation_set("edit", 8, split="test")]
    assert kinds != [example.edit.kind for example in evaluation_set("edit", 8, split="validation")]
    moved = [kind == "move" for kind in kinds]
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text(json.dumps({**_row(52000, "edit", [False] * 8), "split": "test"}) + "\n"
                     + json.dumps(_row(52000, "edit", [True] * 8)) + "\n")
    second.write_text(json.dumps({**_row(52000, "edit", moved), "split": "test"}) + "\n")
    lines = progress.compare_logs(first, second).splitlines()
    n = sum(moved)
    assert lines[2].startswith(f"| edit (test) | 52000 | all | 8 | {n / 8:+.3f}")  # not paired with the validation row
    assert any(line.startswith(f"| edit (test) | 52000 | move | {n} | +1.000") for line in lines)
    assert not any(line.startswith("| edit | ") for line in lines)


def test_score_pipeline_takes_the_split_and_guidance_given_and_records_them(tmp_path, monkeypatch):
    import mtu.toyworld.evaluate as evaluate

    progress = load_benchmark("checkpoint_progress")
    calls = []

    def outputs(pipe, examples, seed, **kwargs):
        calls.append((examples[0].prompt, kwargs))
        return [example.target for example in examples]

    monkeypatch.setattr(evaluate, "generate_outputs", outputs)
    held_out = progress.score_pipeline(None, ["edit", "sr"], 2, 0, 7, "x", split="test",
                                       sampling={"edit": {"guidance_scale": 3.0, "image_guidance_scale": 1.6}})
    validation = progress.score_pipeline(None, ["edit"], 2, 0, 7, "x")
    assert calls[0] == (evaluate.evaluation_set("edit", 2, split="test")[0].prompt,
                        {"guidance_scale": 3.0, "image_guidance_scale": 1.6})
    assert calls[1][1] == {}  # sr: no guidance in the table given
    assert calls[2] == (evaluate.evaluation_set("edit", 2, split="validation")[0].prompt, progress.SAMPLING["edit"])
    assert held_out[0]["split"] == "test" and held_out[0]["sampling"]["image_guidance_scale"] == 1.6
    assert "split" not in validation[0] and "sampling" not in validation[0]


def test_held_out_scores_a_checkpoint_on_the_test_scenes_at_the_given_guidance(tmp_path, monkeypatch, capsys):
    """`--held-out SAMPLING_JSON`: the checkpoint's rows are scored on the held-out split at that file's guidance
    and say so; a missing file is refused in one line before any model is read."""
    import pytest

    import mtu.toyworld.evaluate as evaluate

    progress = load_benchmark("checkpoint_progress")
    with pytest.raises(SystemExit):
        progress.main(["ckpt", "--held-out", str(tmp_path / "missing.json")])
    assert "--held-out: no such file" in capsys.readouterr().err
    calls = []
    _no_model(monkeypatch)

    def outputs(pipe, examples, seed, **kwargs):
        calls.append((examples[0].prompt, kwargs))
        return [example.target for example in examples]

    monkeypatch.setattr(evaluate, "generate_outputs", outputs)
    sampling = tmp_path / "sampling.json"
    sampling.write_text(json.dumps({"edit": {"guidance_scale": 3.0, "image_guidance_scale": 1.6}}))
    log = tmp_path / "held-out.jsonl"
    progress.main([str(tmp_path / "checkpoint-0004000"), "--tasks", "edit", "--count", "3", "--held-out",
                   str(sampling), "--log", str(log)])
    row = json.loads(log.read_text())
    assert calls == [(evaluate.evaluation_set("edit", 3, split="test")[0].prompt,
                      {"guidance_scale": 3.0, "image_guidance_scale": 1.6})]
    assert row["split"] == "test" and row["sampling"] == {"guidance_scale": 3.0, "image_guidance_scale": 1.6}
