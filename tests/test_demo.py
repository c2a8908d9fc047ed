"""A shortened `mtu demo` (a few steps, a few examples) runs end to end and writes a complete report."""

import json

from mtu.cli import main


def test_short_demo_writes_a_complete_report(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--steps", "2", "--batch-size", "4", "--eval-count", "2",
                 "--tune-count", "2"])
    assert code == 0
    for name in ("report.html", "metrics.json", "router_heatmap.png", "adapter/mtu_config.json",
                 "adapter/mtu_model.safetensors", "run/config.yaml", "run/train_summary.json"):
        assert (out / name).is_file(), name
    for task in ("t2i", "edit", "sr", "inpaint"):
        assert (out / "gallery" / f"{task}.png").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert [row["task"] for row in metrics["tasks"]] == ["t2i", "edit", "sr", "inpaint"]
    weights = metrics["router_weights"]["edit"]
    assert len(weights) == 7 and all(abs(sum(values) - 1) < 1e-5 and len(values) == 4 for values in weights.values())
    choice = metrics["guidance_choice"]
    assert sorted(choice) == ["edit", "inpaint"]  # the dual-guidance tasks
    pairs = [(row["guidance_scale"], row["image_guidance_scale"]) for row in choice["edit"]["tried"]]
    assert pairs == [(7.5, 1.6), (7.5, 3.0), (7.5, 5.0), (3.0, 1.6), (3.0, 3.0), (3.0, 5.0)]
    chosen = choice["edit"]["chosen"]
    assert (chosen["guidance_scale"], chosen["image_guidance_scale"]) in pairs
    assert metrics["tasks"][1]["guidance"] == chosen
    for row in metrics["tasks"]:  # the main metric with its 95% interval, and the partial scores
        low, high = row["interval"]
        assert low <= row["value"] + 1e-9 and row["value"] <= high + 1e-9
        assert "attr_kind" in row["partial"] and row["partial"]["attr_kind"]["count"] == 2
    assert "per_kind" in metrics["tasks"][1]["partial"] and "preserved" in metrics["tasks"][3]["partial"]
    page = (out / "report.html").read_text()
    assert "<svg" in page and "gallery/inpaint.png" in page and "Fig. 5" in page and "guidance chosen" in page
    printed = capsys.readouterr().out
    assert "report:" in printed and "faithfulness" in printed and "95% interval" in printed
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_demo_bad_argument_is_one_line(capsys):
    assert main(["demo", "--steps", "0"]) == 2
    assert capsys.readouterr().err.strip() == "mtu: error: `steps` must be an integer >= 1, got 0."


def test_demo_bad_tune_count_is_one_line(capsys):
    assert main(["demo", "--tune-count", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "mtu: error: `tune_count` must be an integer >= 0, got -1."
