"""An adapter folder's sampling.json: the guidance scales a pipeline loaded from that folder uses by default.

`MTUPipeline.from_pretrained` and `mtu generate` read it; the scales reach the sampling loop when a call leaves
them None, an argument still wins, `from_base` ignores the file unless given the overrides, and a bad file is one
clear error naming the file, the task and the value, before any weights load.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import PIL.Image
import pytest

import mtu
from mtu.cli import main
from mtu.pipelines import MTUPipeline, TaskDefaults, common
from mtu.pipelines.defaults import SAMPLING_NAME, TASK_DEFAULTS
from mtu.toyworld.components import shipped_base

from .test_pipeline_mtu import one_thread  # noqa: F401 (autouse fixture)

TASKS = ["t2i", "edit", "sr"]


class StopRun(Exception):
    """Raised by the spy at the first guidance step: the test needs the scales, not an image."""


@pytest.fixture(scope="module")
def saved_adapter(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sampling") / "adapter"
    mtu.upcycle(mtu.load_base_unet(str(shipped_base())), mtu.MTUConfig(tasks=TASKS, num_experts=4)).save_pretrained(
        folder)
    return folder


@pytest.fixture
def adapter(saved_adapter, tmp_path):
    """A fresh copy of the adapter folder, to write a sampling.json into."""
    return shutil.copytree(saved_adapter, tmp_path / "adapter")


def write_sampling(folder, content) -> None:
    (folder / SAMPLING_NAME).write_text(content if isinstance(content, str) else json.dumps(content))


@pytest.fixture
def spy(monkeypatch):
    """The (guidance, guidance_scale, image_guidance_scale) reaching the sampling loop; the run stops there."""
    seen = []

    def combine(noise_pred, guidance, guidance_scale, image_guidance_scale):
        seen.append((guidance, guidance_scale, image_guidance_scale))
        raise StopRun

    monkeypatch.setattr(common, "combine_guidance", combine)
    return seen


def rgb(size: int = 32) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_sampling_json_replaces_the_papers_scales(adapter, spy):
    write_sampling(adapter, {"edit": {"guidance_scale": 3, "image_guidance_scale": 5.0},
                             "t2i": {"guidance_scale": 2.5}})
    pipe = MTUPipeline.from_pretrained(adapter)
    assert pipe.task_defaults("edit") == TaskDefaults("dual", 20, guidance_scale=3.0, image_guidance_scale=5.0)
    assert pipe.task_defaults("t2i") == TaskDefaults("text", 20, guidance_scale=2.5)
    assert pipe.task_defaults("sr") == TASK_DEFAULTS["sd"]["sr"]  # not named: the paper's
    for kwargs, expected in (({}, ("dual", 3.0, 5.0)), ({"guidance_scale": 7.0}, ("dual", 7.0, 5.0))):
        with pytest.raises(StopRun):
            pipe("edit", "remove the square", image=rgb(), num_inference_steps=1, **kwargs)
        assert spy.pop() == expected  # the recorded scale, unless the call gives one
    with pytest.raises(StopRun):
        pipe("t2i", "a red circle", num_inference_steps=1)
    assert spy.pop() == ("text", 2.5, None)


def test_a_partial_entry_keeps_the_other_scale(adapter):
    write_sampling(adapter, {"edit": {"image_guidance_scale": 2.0}})
    pipe = MTUPipeline.from_pretrained(adapter)
    assert pipe.task_defaults("edit") == TaskDefaults("dual", 20, guidance_scale=7.5, image_guidance_scale=2.0)
    pipe.set_sampling_defaults({})
    assert pipe.task_defaults("edit") == TASK_DEFAULTS["sd"]["edit"]


def test_from_base_keeps_the_papers_defaults_unless_given_overrides(adapter):
    write_sampling(adapter, {"t2i": {"guidance_scale": 2.5}})
    assert MTUPipeline.from_base(shipped_base(), adapter).task_defaults("t2i") == TASK_DEFAULTS["sd"]["t2i"]
    pipe = MTUPipeline.from_base(shipped_base(), adapter, sampling_defaults={"t2i": {"guidance_scale": 4.0}})
    assert pipe.task_defaults("t2i").guidance_scale == 4.0
    with pytest.raises(ValueError, match="`sampling_defaults`: task 'sr' runs without guidance"):
        pipe.set_sampling_defaults({"sr": {"guidance_scale": 2.0}})


def test_without_sampling_json_the_papers_defaults(adapter):
    pipe = MTUPipeline.from_pretrained(adapter)
    assert {task: pipe.task_defaults(task) for task in TASKS} == {task: TASK_DEFAULTS["sd"][task] for task in TASKS}


def test_generate_command_uses_the_recorded_scales(adapter, spy, tmp_path):
    write_sampling(adapter, {"edit": {"guidance_scale": 3.0, "image_guidance_scale": 5.0}})
    rgb().save(tmp_path / "in.png")
    # The spy stops the run with an exception the CLI does not know, so it reports a bug (exit 1) after the spy saw
    # the scales the command passed.
    code = main(["generate", "--model", str(adapter), "--task", "edit", "--image", str(tmp_path / "in.png"),
                 "--prompt", "remove the square", "--out", str(tmp_path / "out.png"), "--steps", "1", "--device", "cpu"])
    assert code == 1 and spy == [("dual", 3.0, 5.0)]


BAD_FILES = [
    ("{not json", r"sampling.json is not valid JSON"),
    ("[1, 2]", r"sampling.json must hold an object \{task: \{field: value\}\}, got \[1, 2\]"),
    ({"inpaint": {"guidance_scale": 3.0}}, r"task 'inpaint' is not one of the model's tasks \['t2i', 'edit', 'sr'\]"),
    ({"edit": 3.0}, r"task 'edit' must map to an object of \['guidance_scale', 'image_guidance_scale'\], got 3.0"),
    ({"edit": {"guidance": 3.0}}, r"task 'edit' has unknown field 'guidance'.*did you mean 'guidance_scale'\?"),
    ({"edit": {"guidance_scale": -1}}, r"task 'edit' `guidance_scale` must be a finite number >= 0, got -1"),
    ('{"edit": {"image_guidance_scale": NaN}}', r"task 'edit' `image_guidance_scale` must be a finite .* got nan"),
    ({"t2i": {"guidance_scale": True}}, r"task 't2i' `guidance_scale` must be a finite number >= 0, got True"),
    ({"t2i": {"image_guidance_scale": 1.5}}, r"task 't2i' has 'text' guidance, no image guidance, so it takes no "
                                             r"`image_guidance_scale`, got 1.5"),
    ({"sr": {"guidance_scale": 2.0}}, r"task 'sr' runs without guidance, so it takes no `guidance_scale`, got 2.0"),
]


@pytest.mark.parametrize("content, message", BAD_FILES)
def test_a_bad_sampling_json_names_the_file_task_and_value(adapter, content, message):
    write_sampling(adapter, content)
    with pytest.raises(ValueError, match=message) as error:
        MTUPipeline.from_pretrained(adapter)
    assert str(adapter / SAMPLING_NAME) in str(error.value)


def test_a_bad_sampling_json_is_one_line_before_any_weights_load(adapter, tmp_path, capsys, monkeypatch):
    write_sampling(adapter, {"sr": {"guidance_scale": 2.0}})
    monkeypatch.setattr(common, "load_mtu", lambda *args, **kwargs: pytest.fail("weights were loaded"))
    out = tmp_path / "out.png"
    assert main(["generate", "--model", str(adapter), "--task", "t2i", "--prompt", "a red circle",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mtu: error: ") and "\n" not in err and "task 'sr' runs without guidance" in err
    assert not out.exists()
