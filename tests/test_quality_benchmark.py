"""The quality benchmark's bookkeeping: runs made at different times join into one table only when their budgets
match, each (row, seed) counts once, MTU N=4 is judged against the issue's target from the measured means, cells
carry 95% intervals over the examples and rows are compared pairwise on the same examples (issue 11)."""

import json
from pathlib import Path

import pytest

from .scripts import load_benchmark


@pytest.fixture(scope="module")
def quality():
    return load_benchmark("toyworld_quality")


ARGS = {"steps": 1600, "batch_size": 16, "lr": 2e-3, "full_lr": 2e-4, "tune_count": 32, "eval_count": 32,
        "base": None}


METRIC = {"t2i": "faithfulness", "edit": "success", "sr": "psnr", "inpaint": "success"}


def _run(seed, lr, trainable=10, **main):
    return {"seed": seed, "lr": lr, "trainable": trainable,
            "scores": {task: {METRIC[task]: value} for task, value in main.items()}}


def _kept(seed, lr, **outcomes):
    """A run as the benchmark now saves it: per-example main metric of each task, and their means as scores."""
    return {**_run(seed, lr, **{task: sum(values) / len(values) for task, values in outcomes.items()}),
            "steps": 1600, "per_example": outcomes}


def _hits(*indices, count=256):
    """Per-example outcomes: True at `indices`."""
    return [index in indices for index in range(count)]


def _write(path: Path, results: dict, seeds="0", peft_rows="per-task", **args) -> str:
    """A quality.json as the benchmark writes it (`peft_rows=None`: as it wrote it before per-task PEFT rows)."""
    data = {"args": {**ARGS, "seeds": seeds, **args}, "results": results}
    path.write_text(json.dumps(data if peft_rows is None else {**data, "peft_rows": peft_rows}))
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


def test_eval_count_defaults_to_256(quality):
    args = quality.build_parser().parse_args([])
    assert args.eval_count == 256 and args.tune_count == 32


def test_cells_carry_intervals_over_examples(quality):
    from mtu.stats import summarize_mean, wilson_interval

    one = {"mtu-n4": [_kept(0, 2e-3, t2i=_hits(*range(64)))]}  # 64 of 256
    low, high = wilson_interval(64, 256)
    assert f"| mtu-n4 | 10 | 0.002 | 1600 | 0 | 0.250 [{low:.3f}, {high:.3f}] | - |" in quality.table(one)
    # Two seeds: the per-example success fractions are bootstrapped; the seed sd follows the interval.
    two = [_kept(0, 2e-3, t2i=_hits(*range(64))), _kept(1, 2e-3, t2i=_hits(*range(32, 128)))]
    pooled = summarize_mean([(i < 64) / 2 + (32 <= i < 128) / 2 for i in range(256)])
    assert pooled["value"] == pytest.approx(0.3125)
    cell = f"0.312 [{pooled['low']:.3f}, {pooled['high']:.3f}] +- 0.088"  # sd of 0.25 and 0.375
    assert cell in quality.table({"mtu-n4": two})
    assert quality.interval(two, "t2i") == pooled
    # PSNR: the bootstrap of the per-example seed-means, and the cell's mean is theirs.
    psnr = [_kept(0, 2e-3, sr=[20.0 + i % 4 for i in range(256)]), _kept(1, 2e-3, sr=[22.0] * 256)]
    expected = summarize_mean([21.0 + (i % 4) / 2 for i in range(256)])
    bounds = quality.interval(psnr, "sr")
    assert bounds == expected and bounds["low"] < 21.75 < bounds["high"]
    assert f"| 21.750 [{bounds['low']:.3f}, {bounds['high']:.3f}] +- 0.354 |" in quality.table({"lora": psnr})


def test_paired_comparisons_say_significant_or_tie(quality):
    # mtu-n4 succeeds on examples 0-63, single:t2i on 0-31 (32 discordant pairs, all one way): +0.125, significant.
    # lora differs from mtu-n4 on three examples only (two for lora, one for mtu): -1/256, a tie.
    results = {"single:t2i": [_kept(0, 2e-4, t2i=_hits(*range(32)))],
               "mtu-n4": [_kept(0, 2e-3, t2i=_hits(*range(64)), sr=[25.0] * 256)],
               "lora": [_kept(0, 2e-3, t2i=_hits(*range(62), 100, 101, 102), sr=[24.0] * 256)],
               "mtu-n4-shard": [_kept(0, 2e-3, t2i=_hits(*range(64)), sr=[24.0 + 2 * (i % 2) for i in range(256)])]}
    text = quality.table(results)
    assert "t2i: mtu/single 2.000 (within 5%); vs lora -0.004 (not ahead)" in text  # the judgement lines stay
    assert "Paired comparisons on the same held-out examples" in text
    single = quality.paired(results["mtu-n4"], results["single:t2i"], "t2i")
    assert single["difference"] == 0.125 and single["significant"] and 0.05 < single["low"] < 0.125 < single["high"]
    assert single["p_value"] == pytest.approx(2 / 2 ** 32)  # exact McNemar, 32 vs 0
    assert (f"  mtu-n4 vs single:t2i, t2i faithfulness: +0.125 [{single['low']:+.3f}, {single['high']:+.3f}] "
            "significant; McNemar p 4.66e-10 (32 vs 0 discordant); seeds 0, 256 examples") in text
    lora = quality.paired(results["mtu-n4"], results["lora"], "t2i")
    assert lora["difference"] == pytest.approx(-1 / 256) and not lora["significant"]
    assert (lora["first_only"], lora["second_only"], lora["p_value"]) == (2, 3, 1.0)
    assert f"  mtu-n4 vs lora, t2i faithfulness: -0.004 [{lora['low']:+.3f}, {lora['high']:+.3f}] tie; " in text
    sr = quality.paired(results["mtu-n4"], results["lora"], "sr")
    assert (sr["difference"], sr["low"], sr["high"], sr["significant"]) == (1.0, 1.0, 1.0, True)
    assert "p_value" not in sr  # PSNR: no McNemar
    assert "  mtu-n4 vs lora, sr psnr: +1.000 [+1.000, +1.000] significant; seeds 0, 256 examples" in text
    shard = quality.paired(results["mtu-n4"], results["mtu-n4-shard"], "sr")  # +1 or -1 in turn: a tie at 0
    assert shard["difference"] == 0.0 and not shard["significant"]
    assert "  mtu-n4 vs mtu-n4-shard, sr psnr: +0.000 [" in text and "mtu-n4 vs mtu-n4-shard, t2i" in text
    assert [entry[:2] for entry in quality.comparisons(results)] == [
        ("mtu-n4", "single:t2i"), ("mtu-n4", "lora"), ("mtu-n4", "lora"), ("mtu-n4", "mtu-n4-shard"),
        ("mtu-n4", "mtu-n4-shard")]


def test_paired_comparisons_pool_the_shared_seeds(quality):
    # Seeds 0 and 1 in both rows (seed 2 only in the first: left out). Discordant pairs: seed 0, examples 0-9 for
    # mtu-n4 only; seed 1, examples 0-9 for mtu-n4 and 10-14 for lora: 20 vs 5 pooled over seeds 0,1.
    mtu = [_kept(0, 2e-3, edit=_hits(*range(10))), _kept(1, 2e-3, edit=_hits(*range(10))),
           _kept(2, 2e-3, edit=_hits(*range(256)))]
    lora = [_kept(0, 2e-3, edit=_hits()), _kept(1, 2e-3, edit=_hits(*range(10, 15)))]
    from mtu.stats import mcnemar_p_value

    result = quality.paired(mtu, lora, "edit")
    assert result["seeds"] == [0, 1] and result["count"] == 256
    assert result["difference"] == pytest.approx((10 - 2.5) / 256)
    assert (result["first_only"], result["second_only"]) == (20, 5)
    assert result["p_value"] == mcnemar_p_value(20, 5)
    assert quality.paired(mtu[2:], lora, "edit") == "no seed with per-example outcomes in both rows"


def test_a_difference_that_flips_with_the_seed_is_a_tie(quality):
    # Seed 0: mtu-n4 ahead on 80 examples; seed 1: lora ahead on 30. Averaged over the seeds (+25/256) the
    # examples-only interval excludes 0, but the seeds disagree in sign.
    mtu = [_kept(0, 2e-3, edit=_hits(*range(80))), _kept(1, 2e-3, edit=_hits())]
    lora = [_kept(0, 2e-3, edit=_hits()), _kept(1, 2e-3, edit=_hits(*range(100, 130)))]
    flipped = quality.paired(mtu, lora, "edit")
    assert flipped["per_seed"] == pytest.approx([80 / 256, -30 / 256])
    assert flipped["low"] > 0  # the examples alone would call it significant
    assert flipped["seed_low"] < 0 < flipped["seed_high"] and not flipped["significant"]
    line = quality._paired_line("mtu-n4", "lora", "edit", flipped)
    assert (f", over seeds too [{flipped['seed_low']:+.3f}, {flipped['seed_high']:+.3f}], per seed +0.312/-0.117 "
            "tie; McNemar p") in line
    # the same lead in both seeds stays significant
    steady = quality.paired([_kept(seed, 2e-3, edit=_hits(*range(60))) for seed in (0, 1)],
                            [_kept(seed, 2e-3, edit=_hits(*range(5))) for seed in (0, 1)], "edit")
    assert steady["per_seed"] == pytest.approx([55 / 256] * 2) and steady["seed_low"] > 0 and steady["significant"]


def test_old_files_without_per_example_outcomes_merge_and_print(quality, tmp_path):
    old = _write(tmp_path / "old.json", {"single:t2i": [_run(0, 2e-4, t2i=0.75)],
                                         "mtu-n4": [_run(0, 2e-3, t2i=0.8, sr=24.0)],
                                         "lora": [_run(0, 2e-3, t2i=0.7, sr=23.0)]}, eval_count=256)
    new = _write(tmp_path / "new.json", {"mtu-n4": [_kept(1, 2e-3, t2i=_hits(*range(192)), sr=[25.0] * 256)],
                                         "lora": [_kept(1, 2e-3, t2i=_hits(*range(160)), sr=[24.0] * 256)]},
                 seeds="1", eval_count=256)
    text = quality.table(quality.merge([old]))
    assert "| mtu-n4 | 10 | 0.002 | 1600 | 0 | 0.800 | - | 24.000 | - |" in text  # no intervals
    assert "t2i: mtu/single 1.067 (within 5%); vs lora +0.100 (ahead)" in text
    assert "Paired comparisons" not in text  # nothing to pair
    joined = quality.table(quality.merge([old, new]))
    assert "| mtu-n4 | 10 | 0.002 | 1600 | 0,1 | 0.775 +- 0.035 |" in joined  # a mixed row: no interval
    assert ("mtu-n4 vs single:t2i, t2i faithfulness: not paired: no per-example outcomes (runs saved before they "
            "were kept)") in joined
    assert "mtu-n4 vs lora, t2i faithfulness: +0.125 [" in joined and "(32 vs 0 discordant); seeds 1," in joined
    assert "mtu-n4 vs lora, sr psnr: +1.000 [+1.000, +1.000] significant; seeds 1, 256 examples" in joined


def test_lora_and_ia3_rows_are_per_task_adapters_and_shared_ones_have_their_own_rows(quality, monkeypatch, tmp_path):
    # Table 3's baselines are task-specific adapters (issue 12.2): rows lora / ia3 train `lora` / `ia3` (one
    # adapter per task) at the per-task matched rank; lora-shared / ia3-shared keep one adapter for all tasks.
    assert quality.ROWS["lora"]["method"] == "lora" and quality.ROWS["ia3"]["method"] == "ia3"
    assert quality.ROWS["lora-shared"]["method"] == "lora_shared"
    assert quality.ROWS["ia3-shared"] == {"method": "ia3_shared", "model": {"ia3_on_attention": True}}
    assert quality.ALL_ROWS["lora-sr2"]["method"] == "lora"
    assert quality.ALL_ROWS["lora-shared-sr2"]["method"] == "lora_shared"
    trained = {}

    def fake_train_and_score(config, examples, seed, tune_guidance, records):
        trained[config.output_dir.rsplit("/", 1)[-1]] = config.model
        return {"scores": {}, "trainable": 1, "guidance": {}, "records": {}}

    monkeypatch.setattr(quality, "train_and_score", fake_train_and_score)
    args = quality.build_parser().parse_args(["--out", str(tmp_path)])
    ranks = {"lora": 25, "lora_shared": 101}
    for row in ("lora", "lora-shared", "ia3", "ia3-shared"):
        quality.run_row(row, quality.ROWS[row], "random:tiny", args, 0, {}, ranks)
    assert (trained["lora-seed0"].method, trained["lora-seed0"].lora_rank) == ("lora", 25)
    assert (trained["lora-shared-seed0"].method, trained["lora-shared-seed0"].lora_rank) == ("lora_shared", 101)
    assert trained["ia3-seed0"].method == "ia3" and trained["ia3-shared-seed0"].method == "ia3_shared"


def test_per_task_lora_rank_is_matched_over_all_adapters(quality):
    per_task, target = quality.matched_lora_rank("random:tiny", per_task=True)
    shared, same_target = quality.matched_lora_rank("random:tiny", per_task=False)
    assert target == same_target and per_task > 1 and abs(per_task - shared / len(quality.TASKS)) <= 1


def test_old_files_lora_and_ia3_rows_merge_as_the_shared_rows_they_were(quality, tmp_path):
    old = _write(tmp_path / "old.json", {"mtu-n4": [_run(0, 2e-3, t2i=0.8)], "lora": [_run(0, 2e-3, t2i=0.7)],
                                         "ia3": [_run(0, 2e-3, t2i=0.6)], "lora-sr2": [_run(0, 2e-3, t2i=0.5)]},
                 peft_rows=None)
    new = _write(tmp_path / "new.json", {"lora": [_run(1, 2e-3, t2i=0.75)]}, seeds="1")
    results = quality.merge([old, new])
    assert list(results) == ["mtu-n4", "lora", "lora-shared", "ia3-shared", "lora-shared-sr2"]
    assert [run["seed"] for run in results["lora"]] == [1] and [run["seed"] for run in results["lora-shared"]] == [0]
    assert ("mtu-n4", "lora-shared") in [entry[:2] for entry in quality.comparisons(results)]
    text = quality.table(results)
    assert "| lora-shared | 10 | 0.002 | 1600 | 0 | 0.700 |" in text
    assert "t2i: vs lora +0.050 (ahead)" in text  # the target is judged against the per-task row only


def test_the_paper_rows_of_issue_12_build_their_models(quality):
    """Every Table 1 / Table 4-bottom / Table 5 / top-4-of-8 row is a valid run: its model builds (on a tiny UNet)
    and trains what the row says; the --rows groups name only known rows."""
    import copy

    from mtu.training.methods import build_model, trainable_parameters
    from mtu.upcycling import load_base_unet

    unet = load_base_unet("random:tiny")
    assert len([name for name in quality.PAPER_ROWS if name.startswith("mtu-n4:")]) == 10  # 6 pairs, 4 triples
    for group in quality.ROW_GROUPS.values():
        assert set(group) <= set(quality.ALL_ROWS)
    for name, spec in quality.PAPER_ROWS.items():
        config = quality.toyworld_train_config("random:tiny", "unused", spec.get("tasks", quality.TASKS),
                                               method=spec["method"], mtu=spec.get("mtu"),
                                               **dict(spec.get("model", {})))
        model = build_model(copy.deepcopy(unet), config.model, config.tasks)
        trained = list(trainable_parameters(model))
        if name.startswith("table1-"):
            part = {"ffn": ".ff.", "self_attn": ".attn1.", "cross_attn": ".attn2."}[name.split("-", 1)[1].split(":")[0]]
            assert all(part in n or "conv_in" in n for n in trained), name
        else:
            mtu = spec["mtu"]
            assert model.mtu_config.num_experts == mtu["num_experts"], name
            assert model.mtu_config.granularity == pytest.approx(mtu.get("granularity", 1 / mtu["num_experts"]))


def test_table4_rows_are_paired_against_mtu_n4(quality):
    """Table 4's question (how many experts) gets its paired comparisons: mtu-n4 against mtu-n1 (and n2, n8,
    top-4 of 8 when present), on each task both rows scored."""
    results = {"mtu-n4": [_kept(0, 2e-3, t2i=_hits(*range(40)), edit=_hits(*range(12)))],
               "mtu-n1": [_kept(0, 2e-3, t2i=_hits(*range(30)), edit=_hits(*range(12)))],
               "mtu-n8": [_kept(0, 2e-3, t2i=_hits(*range(40)))]}
    assert quality.comparisons(results) == [
        ("mtu-n4", "mtu-n1", "t2i"), ("mtu-n4", "mtu-n1", "edit"), ("mtu-n4", "mtu-n8", "t2i")]
    text = quality.table(results)
    n1 = quality.paired(results["mtu-n4"], results["mtu-n1"], "t2i")
    assert (n1["difference"], n1["first_only"], n1["second_only"]) == (pytest.approx(10 / 256), 10, 0)
    assert "  mtu-n4 vs mtu-n1, t2i faithfulness: +0.039 [" in text
    assert "  mtu-n4 vs mtu-n1, edit success: +0.000 [+0.000, +0.000] tie" in text


def test_the_paper_claims_of_issue_12_are_paired(quality):
    """Each claim of Table 1, Table 4 bottom and the top-4-of-8 text is one paired comparison, on the tasks both
    rows scored: the FFN row against the attention rows of its task, G=1 against N=1, and so on."""
    results = {"table1-ffn:edit": [_kept(0, 2e-4, edit=_hits(*range(20)))],
               "table1-self_attn:edit": [_kept(0, 2e-4, edit=_hits(*range(5)))],
               "table1-cross_attn:edit": [_kept(0, 2e-4, edit=_hits(*range(20)))],
               "table1-ffn:sr": [_kept(0, 2e-4, sr=[20.0] * 256)],
               "mtu-n2-g1": [_kept(0, 2e-3, t2i=_hits(*range(50)))],
               "mtu-n1": [_kept(0, 2e-3, t2i=_hits(*range(30)))]}
    assert quality.comparisons(results) == [
        ("table1-ffn:edit", "table1-self_attn:edit", "edit"), ("table1-ffn:edit", "table1-cross_attn:edit", "edit"),
        ("mtu-n2-g1", "mtu-n1", "t2i")]
    text = quality.table(results)
    assert "  table1-ffn:edit vs table1-self_attn:edit, edit success: +0.059 [" in text
    assert "  table1-ffn:edit vs table1-cross_attn:edit, edit success: +0.000 [+0.000, +0.000] tie" in text
    assert "  mtu-n2-g1 vs mtu-n1, t2i faithfulness: +0.078 [" in text
    assert "Task interference" not in text  # no Table 5 rows


def test_table5_compares_each_task_in_a_combination_with_the_task_alone(quality):
    """Table 5's interference: a task trained beside others is paired with the same task trained alone, and the
    interference table shows the means with those differences, marking the significant ones."""
    results = {"mtu-n4-alone:t2i": [_kept(0, 2e-3, t2i=_hits(*range(100)))],
               "mtu-n4-alone:edit": [_kept(0, 2e-3, edit=_hits(*range(40)))],
               "mtu-n4:t2i+edit": [_kept(0, 2e-3, t2i=_hits(*range(100)), edit=_hits(*range(80)))],
               "mtu-n4": [_kept(0, 2e-3, t2i=_hits(*range(60)), edit=_hits(*range(40)), sr=[25.0] * 256)]}
    assert sorted(quality.comparisons(results)) == sorted([
        ("mtu-n4:t2i+edit", "mtu-n4-alone:t2i", "t2i"), ("mtu-n4:t2i+edit", "mtu-n4-alone:edit", "edit"),
        ("mtu-n4", "mtu-n4-alone:t2i", "t2i"), ("mtu-n4", "mtu-n4-alone:edit", "edit")])
    text = quality.interference_table(results)
    assert "| t2i | 0.391 | - | - | - |" in text
    assert "| edit | - | 0.156 | - | - |" in text
    assert "| t2i+edit | 0.391 (+0.000) | 0.312 (+0.156*) | - | - |" in text
    assert "| all four | 0.234 (-0.156*) | 0.156 (+0.000) | 25.000 | - |" in text
    assert text in quality.table(results)
    assert quality.interference_table({"mtu-n4": results["mtu-n4"]}) == ""


def test_table5_claims_between_combinations_are_paired(quality):
    """The paper's Table 5 text also compares combinations with each other (IE with IP against the four-task model,
    IE+SR without and with IP, T2I+IE without and with IP), first the row the paper finds better; each is one
    paired comparison on the tasks both rows scored."""
    results = {"mtu-n4:edit+sr": [_kept(0, 2e-3, edit=_hits(*range(20)), sr=[30.0] * 256)],
               "mtu-n4:edit+sr+inpaint": [_kept(0, 2e-3, edit=_hits(*range(20)), sr=[29.0] * 256,
                                                inpaint=_hits(*range(9)))],
               "mtu-n4:t2i+edit": [_kept(0, 2e-3, t2i=_hits(*range(90)), edit=_hits(*range(30)))],
               "mtu-n4:t2i+edit+inpaint": [_kept(0, 2e-3, t2i=_hits(*range(80)), edit=_hits(*range(30)),
                                                 inpaint=_hits(*range(9)))]}
    assert sorted(quality.comparisons(results)) == sorted([
        ("mtu-n4:edit+sr", "mtu-n4:edit+sr+inpaint", "edit"), ("mtu-n4:edit+sr", "mtu-n4:edit+sr+inpaint", "sr"),
        ("mtu-n4:t2i+edit", "mtu-n4:t2i+edit+inpaint", "t2i"),
        ("mtu-n4:t2i+edit", "mtu-n4:t2i+edit+inpaint", "edit")])
    text = quality.table(results)
    assert "  mtu-n4:edit+sr vs mtu-n4:edit+sr+inpaint, sr psnr: +1.000 [+1.000, +1.000] significant" in text
    assert "  mtu-n4:t2i+edit vs mtu-n4:t2i+edit+inpaint, t2i faithfulness: +0.039 [" in text
