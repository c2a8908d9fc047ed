"""A user's own task as one plug-in (issue 15): a `colorize` module written outside the package trains from the
command line (`plugins:` in the run file, `--plugin` on the command line) on a toy-world and a folder source,
generates, folds and is scored in the toy world; an adapter trained on it names the module when it is missing."""

from __future__ import annotations

import json
import math
import sys
import textwrap
import warnings

import numpy as np
import pytest
import yaml
from PIL import Image

import mtu
from mtu.cli import main
from mtu.data import schemas as schema_registry
from mtu.tasks import base as plugin_registry
from mtu.upcycling import tasks as spec_registry

from .training_parts import tiny_pipeline_folder, write_caption_folder

COLORIZE = '''
"""colorize: a greyscale image -> the colour image (a user's task plug-in; nothing in mtu names it)."""
import numpy as np
import torch
from PIL import Image

from mtu import TaskSpec
from mtu.data import ColumnSpec, Schema, register_schema
from mtu.tasks import Evaluation, Task, register
from mtu.toyworld.evaluate import Example
from mtu.toyworld.oracle import sr_psnr
from mtu.toyworld.scene import render


def grey(image):
    return image.convert("L").convert("RGB")


def greyscale(*, target, **_):
    """a greyscale copy of the target"""
    luma = (0.299 * target[0] + 0.587 * target[1] + 0.114 * target[2])[None]  # (1, R, R) in [-1, 1]
    return luma.expand(3, -1, -1).clone()


register_schema(Schema("colour_images", "colour images; the input is their greyscale copy",
                       (ColumnSpec("target", "image", ("image", "file_name")),), derived_condition=greyscale))


def toy_pair(scene, size, rng):
    target = render(scene, size)
    return {"condition": grey(target), "target": target}


def heldout_example(task, scene, rng, *, index, seed, size, sr_scale):
    target = render(scene, size)
    return Example(task, None, grey(target), target, scene)


def psnr(output, target):
    return min(sr_psnr(output, target), 100.0)


def score(examples, outputs):
    return {"psnr": float(np.mean([psnr(o, e.target) for o, e in zip(outputs, examples)]))}


def record(example, output, parsed, record):
    record["psnr"] = psnr(output, example.target)


TASK = register(Task(
    TaskSpec("colorize", "greyscale image -> colour image", uses_prompt=False, image_inputs=("image",)),
    schemas=("colour_images",),
    toy_pair=toy_pair,
    evaluation=Evaluation(heldout_example, score, record, main_metric="psnr", main_record="psnr",
                          baseline_name="greyscale input", baseline=lambda example: example.image.copy()),
    colour="#e377c2",
))
'''


@pytest.fixture
def registries(monkeypatch):
    """The registries as they were before the test, restored in place: a plug-in registers into process-wide
    tables (which other modules hold by reference)."""
    spec_registry.available_tasks()  # the built-ins, loaded before the snapshot
    tables = [spec_registry._REGISTRY, spec_registry._ORIGINS, plugin_registry._PLUGINS, schema_registry.SCHEMAS]
    saved = [dict(table) for table in tables]
    for table in tables:  # as in a fresh process (other tests register a `colorize` of their own)
        for name in ("colorize", "colour_images", "doodle", "sketch"):
            table.pop(name, None)
    monkeypatch.delitem(sys.modules, "colorize_task", raising=False)
    yield
    for table, before in zip(tables, saved):
        table.clear()
        table.update(before)
    sys.modules.pop("colorize_task", None)


@pytest.fixture
def user(tmp_path, registries, monkeypatch):
    """A user's project: the plug-in module, a colour-image folder, a run file naming the plug-in; run elsewhere."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "colorize_task.py").write_text(textwrap.dedent(COLORIZE))
    base = tiny_pipeline_folder(tmp_path)
    run = {"output_dir": "run", "plugins": ["colorize_task.py"],  # a file, relative to the run file
           "model": {"base": str(base), "method": "mtu", "mtu": {"num_experts": 2}},
           "data": [{"task": "colorize", "format": "toyworld", "count": 8, "resolution": 32},
                    {"task": "colorize", "format": "folder", "path": str(write_caption_folder(project)),
                     "schema": "colour_images", "resolution": 32}],
           "max_steps": 2, "batch_size": 2, "checkpoint_every": 0, "log_with": "none", "optim": {"lr": 1e-3}}
    (project / "run.yaml").write_text(yaml.safe_dump(run))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return project


def test_unknown_task_is_refused_without_the_plugin(user, capsys):
    """The same run file without its `plugins:` line: the task is unknown (the test below is not vacuous)."""
    run = yaml.safe_load((user / "run.yaml").read_text())
    del run["plugins"]
    (user / "bare.yaml").write_text(yaml.safe_dump(run))
    assert main(["train", "--config", str(user / "bare.yaml")]) == 2
    err = capsys.readouterr().err
    assert "data[0].task" in err and "got 'colorize'" in err and "--plugin" in err


def test_a_user_task_trains_generates_folds_and_is_scored(user, monkeypatch, capsys):
    assert main(["data", "validate", "--config", str(user / "run.yaml")]) == 0
    assert main(["train", "--config", str(user / "run.yaml")]) == 0
    final = user / "run" / "final"
    record = json.loads((final / "mtu_config.json").read_text())
    assert record["tasks"]["colorize"]["image_inputs"] == ["image"]
    assert record["plugins"] == {"colorize": str(user / "colorize_task.py")}

    # Generate and fold in a fresh registry, with the plug-in named as a module on the path (`--plugin`).
    spec_registry._REGISTRY.pop("colorize")
    plugin_registry._PLUGINS.pop("colorize")
    schema_registry.SCHEMAS.pop("colour_images")
    monkeypatch.delitem(sys.modules, "colorize_task")
    monkeypatch.syspath_prepend(str(user))
    grey = Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8))
    grey.save("grey.png")
    assert main(["generate", "--plugin", "colorize_task", "--model", str(final), "--task", "colorize",
                 "--image", "grey.png", "--steps", "2", "--out", "colour.png"]) == 0
    assert Image.open("colour.png").size == (32, 32)
    assert main(["fold", str(final), "--task", "colorize", "--out", "folded", "--plugin", "colorize_task"]) == 0
    assert json.loads((user.parent / "elsewhere" / "folded" / "config.json").read_text())["in_channels"] == 8

    # Scored in the toy world with the task's own hooks.
    from mtu.pipelines import MTUPipeline
    from mtu.toyworld.evaluate import (baseline_outputs, evaluation_set, generate_outputs, score, score_examples,
                                       scored_tasks)

    assert "colorize" in scored_tasks()
    examples = evaluation_set("colorize", 3)
    assert examples == evaluation_set("colorize", 3) or all(  # fixed examples (Example holds PIL images)
        np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(examples, evaluation_set("colorize", 3)))
    pipe = MTUPipeline.from_pretrained(str(final))
    pipe.set_progress_bar_config(disable=True)
    outputs = generate_outputs(pipe, examples, num_inference_steps=2)
    scores, baseline = score(examples, outputs), score(examples, baseline_outputs(examples))
    assert math.isfinite(scores["psnr"]) and math.isfinite(baseline["psnr"])
    assert len(score_examples(examples, outputs)["main"]) == 3


def test_a_missing_plugin_is_named_in_one_line(user, tmp_path):
    assert main(["train", "--config", str(user / "run.yaml")]) == 0
    final = user / "run" / "final"
    spec_registry._REGISTRY.pop("colorize")  # a fresh process that never imported the plug-in
    plugin_registry._PLUGINS.pop("colorize")
    from mtu.upcycling.serialization import PluginNotLoadedWarning, read_adapter_config

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_adapter_config(final)
    messages = [str(w.message) for w in caught if issubclass(w.category, PluginNotLoadedWarning)]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert f"plug-in module {str(user / 'colorize_task.py')!r}" in messages[0]


def test_plugin_that_does_not_exist_is_one_line(registries, capsys):
    assert main(["upcycle", "--plugin", "no_such_task_module", "--base", "random:tiny", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert "--plugin[0]" in err and "no_such_task_module" in err and len(err.strip().splitlines()) == 1


def test_new_tasks_draw_from_their_name_and_builtins_keep_their_index():
    from mtu.tasks import seed_index, stable_index, task_plugin

    assert [seed_index(task_plugin(name)) for name in ("t2i", "edit", "sr", "inpaint")] == [0, 1, 2, 3]
    assert stable_index("colorize") == stable_index("colorize") != stable_index("colourise")


def test_a_plugin_sets_its_sampling_defaults_and_an_optional_prompt(registries):
    """Two per-task parts the pipelines look up: the task's own defaults per family, and whether `prompt` may be
    left out (then the empty prompt); a task without them keeps its guidance kind's defaults and needs a prompt."""
    from mtu import TaskSpec
    from mtu.pipelines.checks import check_call_inputs
    from mtu.pipelines.defaults import task_defaults
    from mtu.tasks import Task, TaskDefaults, register

    own = register(Task(TaskSpec("doodle", "text to doodle"), prompt_optional=True,
                        defaults={"sd": TaskDefaults("text", 7, guidance_scale=3.0)})).spec
    plain = register(Task(TaskSpec("sketch", "text to sketch"))).spec
    assert task_defaults("sd", own) == TaskDefaults("text", 7, guidance_scale=3.0)
    assert task_defaults("sdxl", own) == task_defaults("sdxl", plain) == task_defaults("sdxl", mtu.get_task("t2i"))
    assert check_call_inputs([own], "sd", "doodle").prompts == [""]
    with pytest.raises(mtu.InputError, match="`prompt` is required by task 'sketch'"):
        check_call_inputs([plain], "sd", "sketch")


def test_an_installed_package_announces_its_task_in_the_entry_point_group(user, monkeypatch):
    """`[project.entry-points."mtu.tasks"] colorize = "colorize_task"`: found on the first look-up that misses."""
    from importlib import metadata

    from mtu import registry

    monkeypatch.syspath_prepend(str(user))
    announced = [metadata.EntryPoint("colorize", "colorize_task", "mtu.tasks")]
    monkeypatch.setattr(registry.metadata, "entry_points",
                        lambda group: announced if group == "mtu.tasks" else [])
    monkeypatch.setattr(spec_registry.TASK_REGISTRY, "_loaded", False)
    assert mtu.get_task("colorize").image_inputs == ("image",)
    assert spec_registry.task_origin("colorize") == "colorize_task"


def test_every_command_takes_plugin(user, monkeypatch, capsys):
    """Before: `mtu inspect`, `export`, `analyze`, `demo`, `selfcheck` and `toyworld pretrain` had no `--plugin`, so an
    adapter with a user's task could not be inspected from the command line."""
    from mtu.cli import _commands, build_parser

    missing = [command.prog for command in _commands(build_parser())
               if "--plugin" not in command._option_string_actions]
    assert not missing
    plugin = str(user / "colorize_task.py")
    assert main(["upcycle", "--plugin", plugin, "--base", "random:tiny", "--tasks", "t2i,colorize", "--out", "a"]) == 0
    spec_registry._REGISTRY.pop("colorize")  # a fresh process that never imported the plug-in
    plugin_registry._PLUGINS.pop("colorize")
    schema_registry.SCHEMAS.pop("colour_images")
    monkeypatch.delitem(sys.modules, "colorize_task", raising=False)
    capsys.readouterr()
    assert main(["inspect", "a", "--json", "--plugin", plugin]) == 0
    assert "colorize" in json.loads(capsys.readouterr().out)["tasks"]


BAD_PLUGINS = {
    "clash.py": "from mtu.tasks import Task, register\nfrom mtu import TaskSpec\n"
                "register(Task(TaskSpec('edit', 'another edit', image_inputs=())))\n",
    "bad_task.py": "from mtu.tasks import Task, register\nregister(Task('sketch'))\n",
    "bad_family.py": "from mtu.tasks import Task, TaskDefaults, register\nfrom mtu import TaskSpec\n"
                     "register(Task(TaskSpec('doodle'), defaults={'kandinsky': TaskDefaults('none', 20)}))\n",
}


@pytest.mark.parametrize("flag, message", [
    ("missing.py", "--plugin[0]: plug-in file 'missing.py' does not exist."),
    ("3rd-party", "--plugin[0]: must be a module path such as 'my_package.my_task' or a .py file, got '3rd-party'."),
    ("clash.py", "--plugin[0]: plug-in 'clash.py' registers something mtu refuses: task 'edit' is already registered"),
    ("bad_task.py", "--plugin[0]: plug-in 'bad_task.py' registers something mtu refuses: `spec` must be a TaskSpec, "
                    "got str."),
    ("bad_family.py", "--plugin[0]: plug-in 'bad_family.py' registers something mtu refuses: `defaults` of task "
                      "'doodle' has families ['kandinsky']"),
])
def test_bad_plugins_are_one_line_naming_the_plugin(registries, tmp_path, monkeypatch, capsys, flag, message):
    """Before: a plug-in that registered a clashing or malformed task printed the registry's message alone, without
    saying which plug-in caused it."""
    monkeypatch.chdir(tmp_path)
    for name, text in BAD_PLUGINS.items():
        (tmp_path / name).write_text(text)
    assert main(["upcycle", "--plugin", flag, "--base", "random:tiny", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mtu: error: " + message) and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists()


def test_plugins_in_a_run_file_must_be_a_list(registries, tmp_path, capsys):
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({"plugins": "colorize_task", "data": [{"format": "toyworld", "task": "t2i"}]}))
    assert main(["data", "validate", "--config", str(run)]) == 2
    assert capsys.readouterr().err.startswith("mtu: error: plugins: must be a list of module paths or .py files")
