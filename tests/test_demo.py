"""A shortened `mtu demo` (a few steps, a few examples) runs end to end and writes a complete report, with the
shipped model ("toyworld") beside the live one where the installation has it and without it where it does not."""

import json

import numpy as np
import pytest
from PIL import Image

from mtu.cli import main
from mtu.demo import DEMO_GUIDANCE
from mtu.pipelines import MTUPipeline
from mtu.toyworld import components
from mtu.toyworld.evaluate import evaluation_set, generate_outputs
from mtu.toyworld.experiment import toyworld_train_config
from mtu.toyworld.packaging import package_model
from mtu.training.trainer import Trainer

from .test_pipeline_mtu import one_thread  # noqa: F401 (autouse fixture)

SHORT = ["--steps", "2", "--batch-size", "4", "--eval-count", "2", "--tune-count", "2"]
TASKS = ("t2i", "edit", "sr", "inpaint")


def gallery_rows(path, columns: int = 2) -> list[list[np.ndarray]]:
    """The cells of a gallery image of `columns` examples (`report.image_rows`: square cells, 2 px gaps), by row."""
    grid = np.asarray(Image.open(path).convert("RGB"))
    side = (grid.shape[1] + 2) // columns - 2
    assert columns * (side + 2) - 2 == grid.shape[1] and (grid.shape[0] + 2) % (side + 2) == 0
    return [[grid[r:r + side, c:c + side] for c in range(0, grid.shape[1], side + 2)]
            for r in range(0, grid.shape[0], side + 2)]


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    """A tiny packaged model (two training steps, scored on 4 held-out examples per task) to stand in for the
    shipped one."""
    folder = tmp_path_factory.mktemp("shipped")
    run = folder / "run"
    Trainer(toyworld_train_config(str(components.shipped_base()), run, steps=2, batch_size=4, lr=1e-2, seed=1,
                                  log_with="none")).train()
    package_model(run, out=folder / "model", eval_count=4, tune_count=0, seed=0, first_count=2)
    return folder / "model"


def test_short_demo_writes_a_complete_report(tmp_path, capsys, monkeypatch):
    def absent():
        raise FileNotFoundError("no shipped model here")

    monkeypatch.setattr(components, "shipped_model", absent)
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), *SHORT])
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
    printed = capsys.readouterr()
    assert "report:" in printed.out and "faithfulness" in printed.out and "95% interval" in printed.out
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    # Without the shipped model: said in one line, and the report is the live model's alone.
    assert printed.err.count("the shipped toy-world model ('toyworld') is not in this installation") == 1
    assert "shipped" not in printed.out and "Shipped model" not in page
    assert metrics["shipped_model"] is None and all(row["shipped"] is None for row in metrics["tasks"])
    assert [len(gallery_rows(out / "gallery" / f"{task}.png")) for task in TASKS] == [3, 3, 3, 3]


def test_demo_shows_the_shipped_model_beside_the_live_one(tmp_path, capsys, monkeypatch, packaged):
    """Also the default guidance: without --tune-count the live model samples edit and inpaint with the pairs chosen
    for the default recipe (`DEMO_GUIDANCE`), none tried."""
    monkeypatch.setattr(components, "shipped_model", lambda: packaged)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *SHORT[:-2]]) == 0
    recipe = json.loads((packaged / "recipe.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["shipped_model"] == {"folder": str(packaged), "eval_count": 4, "command": recipe["command"]}
    printed = capsys.readouterr().out
    assert "shipped (recorded)" in printed
    fields = {"t2i": "exact", "edit": "success", "sr": "psnr", "inpaint": "success"}  # packaging's field names
    for row in metrics["tasks"]:
        summary = recipe["scores"][row["task"]][fields[row["task"]]]
        assert row["shipped"] == {"field": fields[row["task"]], **summary}
        line = next(line for line in printed.splitlines() if line.startswith(f"{row['task']} "))
        digits = (2, 1) if row["task"] == "sr" else (3, 2)
        assert (f"{summary['value']:.{digits[0]}f} [{summary['low']:.{digits[1]}f}-{summary['high']:.{digits[1]}f}]"
                f" n=4") in line
    page = (out / "report.html").read_text()
    assert "Shipped model" in page and "on the first 4 held-out examples per task" in page
    assert recipe["command"]["train"] in page and "shipped model output, exact target" in page
    assert "base model, MTU model (live), shipped model" in page
    # One more gallery row per task: the shipped model's outputs on the same examples, with its recorded guidance.
    rows = {task: gallery_rows(out / "gallery" / f"{task}.png") for task in TASKS}
    assert [len(rows[task]) for task in TASKS] == [4, 4, 4, 4]
    pipe = MTUPipeline.from_pretrained(packaged)
    pipe.set_progress_bar_config(disable=True)
    expected = generate_outputs(pipe, evaluation_set("edit", 2), recipe["seed"])
    side = rows["edit"][2][0].shape[0]
    for cell, image in zip(rows["edit"][2], expected):
        assert np.array_equal(cell, np.asarray(image.convert("RGB").resize((side, side), Image.NEAREST)))
    # The live model's edit row: its adapter sampled with DEMO_GUIDANCE's edit pair.
    assert metrics["guidance_choice"] == {task: {"chosen": DEMO_GUIDANCE[task], "tried": []} for task in DEMO_GUIDANCE}
    assert metrics["tasks"][1]["guidance"] == DEMO_GUIDANCE["edit"] and "the pair chosen for this recipe" in page
    live = MTUPipeline.from_pretrained(out / "adapter")
    live.set_progress_bar_config(disable=True)
    expected = generate_outputs(live, evaluation_set("edit", 2), 0, **DEMO_GUIDANCE["edit"])
    for cell, image in zip(rows["edit"][1], expected):
        assert np.array_equal(cell, np.asarray(image.convert("RGB").resize((side, side), Image.NEAREST)))


def test_demo_bad_argument_is_one_line(capsys):
    assert main(["demo", "--steps", "0"]) == 2
    assert capsys.readouterr().err.strip() == "mtu: error: `steps` must be an integer >= 1, got 0."


def test_demo_bad_tune_count_is_one_line(capsys):
    assert main(["demo", "--tune-count", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "mtu: error: `tune_count` must be an integer >= 0, got -1."
