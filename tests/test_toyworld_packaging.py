"""`mtu toyworld package` turns a finished toy-world run into the shipped adapter folder, and the folder's recorded
scores are reproducible from it alone.

A real run of two steps is packaged on a few examples: the folder holds the adapter (recording "toyworld-base"),
sampling.json, train.yaml, recipe.json and README.md, under the size limit, written atomically; loading it by
`MTUPipeline.from_pretrained` and re-measuring the first examples gives recipe.json's "first32" exactly. The last
test does the same for the shipped model (`src/mtu/toyworld/mtu_model/`) once it exists.
"""

from __future__ import annotations

import json
import shutil

import pytest

from mtu.cli import main
from mtu.outputs import MARKER_NAME
from mtu.pipelines import MTUPipeline
from mtu.pipelines.defaults import SAMPLING_NAME
from mtu.toyworld import packaging
from mtu.toyworld.components import SHIPPED_BASE_NAME, shipped_base
from mtu.toyworld.evaluate import BASELINE_NAME, TASKS
from mtu.toyworld.experiment import toyworld_train_config
from mtu.toyworld.packaging import default_out, package_model, reproduce_first32
from mtu.training.config import read_yaml
from mtu.training.trainer import Trainer
from mtu.upcycling.serialization import CONFIG_NAME, WEIGHTS_NAME

from .test_pipeline_mtu import one_thread  # noqa: F401 (autouse fixture)

EVAL_COUNT, FIRST_COUNT, TUNE_COUNT = 5, 4, 2
FILES = sorted([CONFIG_NAME, WEIGHTS_NAME, SAMPLING_NAME, "train.yaml", "recipe.json", "README.md", MARKER_NAME])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished two-step MTU run on the four toy-world tasks over the shipped base."""
    run_dir = tmp_path_factory.mktemp("packaging") / "run"
    Trainer(toyworld_train_config(str(shipped_base()), run_dir, steps=2, batch_size=4, log_with="none")).train()
    return run_dir


@pytest.fixture(scope="module")
def packaged(run):
    """(folder, returned recipe) of the run packaged on 5 held-out examples, the first 4 summarized again."""
    out = run.parent / "model"
    recipe = package_model(run, out=out, eval_count=EVAL_COUNT, tune_count=TUNE_COUNT, seed=0,
                           first_count=FIRST_COUNT)
    return out, recipe


def test_the_folder_holds_the_adapter_recipe_and_card(packaged, run):
    out, returned = packaged
    assert sorted(path.name for path in out.iterdir()) == FILES
    assert not [path.name for path in out.parent.iterdir() if path.name.startswith(".")]  # no staging left
    assert packaging.folder_bytes(out) < packaging.SIZE_LIMIT
    assert json.loads((out / CONFIG_NAME).read_text())["base"]["name_or_path"] == SHIPPED_BASE_NAME
    assert (out / "train.yaml").read_bytes() == (run / "config.yaml").read_bytes()
    recipe = json.loads((out / "recipe.json").read_text())
    assert returned == {**recipe, "folder": str(out)}
    assert recipe["command"] == {"train": "mtu train --config train.yaml", "package": (
        f"mtu toyworld package --run {run} --out {out} --eval-count 5 --tune-count 2 --seed 0")}
    assert recipe["config"] == read_yaml((run / "config.yaml").read_text())
    assert (recipe["base"], recipe["seed"], recipe["train_summary"]["steps"]) == (SHIPPED_BASE_NAME, 0, 2)
    assert recipe["starts_from"] is None
    assert set(recipe["versions"]) == {"mtu", "torch", "diffusers", "transformers"} and recipe["seconds"] > 0
    card = (out / "README.md").read_text()
    for task in TASKS:
        assert recipe["scores"][task]["exact"]["count"] == EVAL_COUNT
        assert recipe["first32"][task]["exact"]["count"] == FIRST_COUNT
        baseline = recipe["baselines"][task]
        assert baseline["name"] == BASELINE_NAME[task] and baseline["scores"]["exact"]["count"] == EVAL_COUNT
        main_field = packaging.CARD_FIELDS[task][0]
        value = recipe["scores"][task][main_field]
        assert value["low"] <= value["value"] <= value["high"]
        assert packaging.format_interval(value, main_field) in card
    assert "per_kind" in recipe["scores"]["edit"] and "removed" in recipe["scores"]["inpaint"]


def test_guidance_is_chosen_on_validation_examples_and_recorded(packaged):
    out, recipe = packaged
    assert sorted(recipe["guidance"]) == ["edit", "inpaint"]  # the dual-guidance tasks
    for task, choice in recipe["guidance"].items():
        tried = [{key: row[key] for key in ("guidance_scale", "image_guidance_scale")} for row in choice["tried"]]
        assert len(tried) == 6 and choice["chosen"] in tried
    sampling = json.loads((out / SAMPLING_NAME).read_text())
    chosen = {task: choice["chosen"] for task, choice in recipe["guidance"].items()}
    assert sampling == recipe["sampling"] == {"t2i": {"guidance_scale": 7.5}, **chosen}
    pipe = MTUPipeline.from_pretrained(out)  # what `mtu generate --model` samples with by default
    for task in ("edit", "inpaint"):
        defaults = pipe.task_defaults(task)
        assert {"guidance_scale": defaults.guidance_scale,
                "image_guidance_scale": defaults.image_guidance_scale} == chosen[task]


def test_reproducing_the_first_examples_gives_the_recorded_summaries(packaged):
    out, recipe = packaged
    assert json.loads(json.dumps(reproduce_first32(out, count=FIRST_COUNT))) == recipe["first32"]


def test_repackaging_replaces_the_folder_and_an_oversized_one_writes_nothing(packaged, run, tmp_path, monkeypatch):
    out, recipe = packaged
    copy = shutil.copytree(out, tmp_path / "model")
    canned = {key: recipe[key] for key in ("sampling", "guidance", "scores", "first32", "baselines")}
    monkeypatch.setattr(packaging, "evaluate_adapter", lambda *args, **kwargs: canned)  # the scoring is tested above
    (copy / "stale.txt").write_text("a file the package did not write")  # kept: a command deletes only its own
    package_model(run, out=copy, eval_count=EVAL_COUNT, tune_count=TUNE_COUNT, first_count=FIRST_COUNT)
    assert sorted(path.name for path in copy.iterdir()) == sorted(FILES + ["stale.txt"])
    before = {path.name: path.read_bytes() for path in copy.iterdir()}
    monkeypatch.setattr(packaging, "SIZE_LIMIT", 1000)
    with pytest.raises(ValueError, match=r"would take [\d,]+ bytes, over the 1,000 a shipped model may; nothing"):
        package_model(run, out=copy, eval_count=EVAL_COUNT, tune_count=TUNE_COUNT, first_count=FIRST_COUNT)
    assert {path.name: path.read_bytes() for path in copy.iterdir()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]


def make_run_like(run, folder, edit=None):
    """A copy of `run`'s config.yaml and final/ in `folder`; `edit(adapter_record)` rewrites final's config."""
    shutil.copytree(run / "final", folder / "final")
    shutil.copyfile(run / "config.yaml", folder / "config.yaml")
    if edit is not None:
        path = folder / "final" / CONFIG_NAME
        record = json.loads(path.read_text())
        edit(record)
        path.write_text(json.dumps(record))
    return folder


def test_a_checkpoint_of_a_run_is_packaged_with_its_step(run, tmp_path):
    """A run that has not ended is packaged from one of its checkpoints: the EMA weights final/ would hold, the
    step recorded in recipe.json and the card."""
    from safetensors.torch import load_file

    checkpoint = sorted((run / "checkpoints").iterdir())[-1]
    out = tmp_path / "from-checkpoint"
    recipe = package_model(checkpoint, out=out, eval_count=2, tune_count=0, seed=0, first_count=2)
    assert recipe["checkpoint"] == {"folder": f"checkpoints/{checkpoint.name}", "step": 2}
    assert "to step 2: the model is checkpoints/checkpoint-0000002's EMA weights" in recipe["command"]["train"]
    assert recipe["train_summary"] is None
    card = " ".join((out / "README.md").read_text().split())
    assert "trained 2 of its recipe's 2 steps (the EMA weights of its checkpoints/checkpoint-0000002) on the toy world" in card
    assert "the run had not ended" not in card  # its last checkpoint: said only of a step before max_steps
    earlier = {**recipe, "checkpoint": {"folder": "checkpoints/checkpoint-0000001", "step": 1}}
    adapter_config = json.loads((out / CONFIG_NAME).read_text())["config"]
    assert ("trained 1 of its recipe's 2 steps (the EMA weights of its checkpoints/checkpoint-0000001: the run had "
            "not ended)") in " ".join(packaging.model_card(earlier, adapter_config).split())
    packaged, final = load_file(out / WEIGHTS_NAME), load_file(run / "final" / WEIGHTS_NAME)
    assert packaged.keys() == final.keys()  # the run's last checkpoint holds what final/ was written from
    assert all(packaged[name].equal(final[name]) for name in final)
    assert (out / "train.yaml").read_bytes() == (run / "config.yaml").read_bytes()


def test_a_run_that_continues_another_adapter_records_where_it_started(run, tmp_path):
    """A run trained on from another run's adapter (`model.adapter`, e.g. a restart with a new schedule) is not
    reproduced by its train.yaml alone: recipe.json, its train command and the card name the adapter it started
    from. A run from scratch records none (checked on `packaged` above)."""
    continued = tmp_path / "continued"
    Trainer(toyworld_train_config(str(shipped_base()), continued, steps=1, batch_size=4, log_with="none",
                                  adapter=str(run / "final"))).train()
    recipe = package_model(continued, out=tmp_path / "model", eval_count=2, tune_count=0, seed=0, first_count=2)
    assert recipe["starts_from"] == str(run / "final")
    assert recipe["command"]["train"] == (f"mtu train --config train.yaml  # continuing the adapter at {run}/final "
                                          "(model.adapter)")
    assert (f"trained 1 steps, continuing the adapter at {run}/final (its recipe's model.adapter),"
            in " ".join((tmp_path / "model" / "README.md").read_text().split()))


def test_a_run_with_a_task_text_encoder_is_packaged_with_it(run, tmp_path):
    """A run whose edit task has its own text encoder (`model.task_text_encoders`) ships it: the package holds
    text_encoders/edit/ beside the adapter, the card says so, and `from_pretrained` encodes edit prompts with it."""
    import torch

    own = tmp_path / "own-text"
    Trainer(toyworld_train_config(str(shipped_base()), own, steps=3, batch_size=4, log_with="none",
                                  adapter=str(run / "final"), task_text_encoders=["edit"])).train()
    package_model(own, out=tmp_path / "model", eval_count=2, tune_count=0, seed=0, first_count=2)
    folder = tmp_path / "model"
    assert sorted(path.name for path in (folder / "text_encoders" / "edit").iterdir()) == [
        "config.json", "model.safetensors"]
    assert "Task text encoders (edit): each of these tasks" in " ".join((folder / "README.md").read_text().split())
    pipe = MTUPipeline.from_pretrained(folder)
    assert pipe.text_encoder_for("edit") is pipe.unet.text_encoders["edit"]
    with torch.no_grad():
        edit = pipe.encode_text(["make the circle red"], "cpu", task="edit")["encoder_hidden_states"]
        t2i = pipe.encode_text(["make the circle red"], "cpu", task="t2i")["encoder_hidden_states"]
    assert (edit - t2i).abs().max() > 1e-4  # training moved the edit copy (its first step is at warm-up lr 0)


def test_a_checkpoint_of_another_method_is_refused_before_its_weights_are_read(run, tmp_path, monkeypatch):
    import mtu.training.export as export

    monkeypatch.setattr(export, "export_checkpoint", lambda *args, **kwargs: pytest.fail("exported anyway"))
    copy = tmp_path / "lora-run"
    checkpoint = sorted((run / "checkpoints").iterdir())[-1]
    shutil.copytree(checkpoint, copy / "checkpoints" / checkpoint.name)
    config = (run / "config.yaml").read_text()
    assert config.count("method: mtu") == 1
    (copy / "config.yaml").write_text(config.replace("method: mtu", "method: lora"))
    with pytest.raises(ValueError, match=r"checkpoint-0000002 is a checkpoint of a 'lora' run; only an MTU adapter "
                                         r"\(method 'mtu'\) is packaged"):
        package_model(copy / "checkpoints" / checkpoint.name, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_runs_and_outputs_fail_before_any_work(run, tmp_path, monkeypatch):
    monkeypatch.setattr(packaging, "evaluate_adapter", lambda *args, **kwargs: pytest.fail("scored anyway"))
    with pytest.raises(FileNotFoundError, match="is not a folder; give the output_dir of an `mtu train` run"):
        package_model(tmp_path / "nowhere", out=tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no config.yaml"):
        package_model(tmp_path / "empty", out=tmp_path / "out")
    shutil.copyfile(run / "config.yaml", tmp_path / "empty" / "config.yaml")
    with pytest.raises(FileNotFoundError, match="has no finished adapter: .*final must hold mtu_config.json"):
        package_model(tmp_path / "empty", out=tmp_path / "out")
    (tmp_path / "empty" / "final").mkdir()
    (tmp_path / "empty" / "final" / "method.json").write_text(json.dumps({"method": "lora"}))
    with pytest.raises(ValueError, match="holds a 'lora' run's weights; only an MTU adapter"):
        package_model(tmp_path / "empty", out=tmp_path / "out")
    with pytest.raises(ValueError, match="`eval_count` must be at least `first_count` \\(32\\)"):
        package_model(run, out=tmp_path / "out", eval_count=8)
    with pytest.raises(ValueError, match="`tune_count` must be an integer >= 0, got -1"):
        package_model(run, out=tmp_path / "out", tune_count=-1)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match="not an earlier `mtu toyworld package` output"):
        package_model(run, out=tmp_path / "mine")
    other = make_run_like(run, tmp_path / "other", lambda record: record["base"].update(name_or_path="/some/base"))
    with pytest.raises(ValueError, match="must be made from the shipped toy-world base"):
        package_model(other)  # default out: the shipped model's folder
    assert not list(default_out().parent.glob(".mtu_model*")) and (tmp_path / "mine" / "notes.txt").is_file()


def test_the_command_reports_errors_in_one_line(tmp_path, capsys):
    assert main(["toyworld", "package", "--run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mtu: error: `run`") and "\n" not in err and not (tmp_path / "out").exists()
    assert main(["toyworld", "package", "--run", str(tmp_path), "--eval-count", "0"]) == 2
    assert capsys.readouterr().err.strip() == "mtu: error: `eval_count` must be an integer >= 1, got 0."


# Tolerances of the shipped model's re-measurement (another machine may flip an example or round differently).
PSNR_TOLERANCE, SSIM_TOLERANCE = 0.05, 0.005


def _tolerance(field: str) -> float:
    if "psnr" in field:
        return PSNR_TOLERANCE
    return SSIM_TOLERANCE if field == "ssim" else 1 / 32 + 1e-9  # rates and attribute accuracies


@pytest.mark.skipif(not default_out().exists(), reason="the shipped toy-world model (mtu_model/) is not built yet")
def test_shipped_model_reproduces_its_recorded_scores():
    recipe = json.loads((default_out() / "recipe.json").read_text())
    measured = reproduce_first32("toyworld", count=recipe.get("first_count", packaging.FIRST_COUNT))
    assert sorted(measured) == sorted(recipe["first32"]) == sorted(TASKS)
    for task, recorded in recipe["first32"].items():
        for field, summary in recorded.items():
            if field == "per_kind":
                assert {kind: value["count"] for kind, value in measured[task][field].items()} == {
                    kind: value["count"] for kind, value in summary.items()}
                continue
            assert measured[task][field]["count"] == summary["count"], (task, field)
            assert abs(measured[task][field]["value"] - summary["value"]) <= _tolerance(field), (
                task, field, measured[task][field]["value"], summary["value"])
