"""Bad run configs are refused when the config is built (before any model, accelerator or dataset), each with one
line naming the field's full path and the value it got: unknown keys (with the nearest valid one), non-finite
numbers, wrong types, unknown tasks, invalid YAML (issue 13, points 4, 7 and 8; docs table rows from here)."""

import copy
import math
import re

import pytest
import yaml

from mtu.errors import InputError
from mtu.training import config_from_dict, load_train_config

RUN = {
    "model": {"base": "no/such/base", "mtu": {"num_experts": 2}},  # never opened: every case fails before
    "data": [{"task": "t2i", "format": "folder", "path": "no/such/t2i", "schema": "captions", "resolution": 16},
             {"task": "edit", "format": "folder", "path": "no/such/edit", "schema": "instructpix2pix",
              "resolution": 16}],
}
MISSING = object()


def _changed(dotted: str, value) -> dict:
    """RUN with the field at `dotted` ("data.1.schema") set to `value`, or removed for MISSING."""
    tree = copy.deepcopy(RUN)
    *parents, last = dotted.split(".")
    node = tree
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if value is MISSING:
        del node[int(last) if isinstance(node, list) else last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return tree


NAN, INF = math.nan, math.inf

# (field changed, value, the whole one-line message as a regex)
CASES = [
    # unknown keys anywhere: errors naming the nearest valid key, never a warning and the default
    ("batchsize", 16, r"batchsize: unknown key; did you mean 'batch_size'\? TrainConfig keys: output_dir, .*"),
    ("optim.lrr", 1e-4, r"optim\.lrr: unknown key; did you mean 'lr'\? OptimConfig keys: .*"),
    ("model.methd", "lora", r"model\.methd: unknown key; did you mean 'method'\? ModelConfig keys: .*"),
    ("model.mtu.nun_experts", 4, r"model\.mtu\.nun_experts: unknown key; did you mean 'num_experts'\? .*"),
    ("data.1.shema", "captions", r"data\[1\]\.shema: unknown key; did you mean 'schema'\? .*"),
    ("model.mtu.tasks", ["t2i"], r"model\.mtu\.tasks: is not set here: the tasks are those of the `data` sources\."),
    # non-finite numbers, refused where they enter
    ("optim.lr", INF, r"optim\.lr: must be a finite number > 0, got inf\."),
    ("optim.lr", NAN, r"optim\.lr: must be a finite number > 0, got nan\."),
    ("optim.weight_decay", NAN, r"optim\.weight_decay: must be a finite number >= 0, got nan\."),
    ("optim.betas", [0.9, NAN], r"optim\.betas\[1\]: must be a finite number in \[0, 1\), got nan\."),
    ("optim.eps", NAN, r"optim\.eps: must be a finite number > 0, got nan\."),
    ("optim.max_grad_norm", NAN, (r"optim\.max_grad_norm: must be a finite number >= 0 \(0 disables clipping\), "
                                 r"got nan\.")),
    ("ema_decay", NAN, r"ema_decay: must be a finite number in \(0, 1\), or null, got nan\."),
    ("snr_gamma", INF, r"snr_gamma: must be a finite number > 0, or null, got inf\."),
    ("conditioning_dropout", NAN, r"conditioning_dropout: must be a finite number in \[0, 1/3\], got nan\."),
    ("task_loss_weights", {"edit": NAN}, r"task_loss_weights\.edit: must be a finite number >= 0, got nan\."),
    ("data.0.weight", NAN, r"data\[0\]\.weight: must be a finite number > 0, got nan\."),
    ("model.lora_alpha", INF, r"model\.lora_alpha: must be a finite number > 0, or null, got inf\."),
    ("model.mtu.granularity", INF, (r"model\.mtu\.granularity: must be a finite number > 0 \(or None for "
                                   r"1/num_experts\), got inf\.")),
    # unknown tasks in per-task settings
    ("task_loss_weights", {"sketch2img": 2.0}, (r"task_loss_weights\.sketch2img: not a task of this run; its tasks "
                                             r"\(those of `data`\): t2i, edit\.")),
    ("task_loss_weights", {"edt": 2.0}, r"task_loss_weights\.edt: not a task of this run; did you mean 'edit'\? .*"),
    ("task_loss_weights", ["edit"], (r"task_loss_weights: must be a mapping task -> weight such as \{edit: 2\.0\}, "
                                    r"got \['edit'\]\.")),
    # sections and sources of the wrong shape
    ("data", {"task": "t2i", "format": "folder"}, (r"data: must be a list of sources \(YAML items `- task: \.\.\.`\), "
                                                  r"got a dict: .*")),
    ("data", [], r"data: must list at least one source, got none\."),
    ("data.0", "no/such/t2i", r"data\[0\]: .*mapping.* got str 'no/such/t2i'\."),
    ("model", "runwayml/stable-diffusion-v1-5", (r"model: must be a mapping of ModelConfig fields, got "
                                                r"'runwayml/stable-diffusion-v1-5'\.")),
    ("optim", 1e-4, r"optim: must be a mapping of OptimConfig fields, got 0\.0001\."),
    ("model.mtu", 4, r"model\.mtu: must be a mapping of MTUSection fields, got 4\."),
    ("optim.betas", 0.9, r"optim\.betas: must be a pair of numbers in \[0, 1\), e\.g\. \[0\.9, 0\.999\], got 0\.9\."),
    # a data source's own fields, under its place in the list
    ("data.1.schema", "captoins", r"data\[1\]\.schema: must be one of \(.*\), got 'captoins'\."),
    ("data.0.schema", MISSING, r"data\[0\]\.schema: required by DataSourceConfig, but missing; .*"),
    ("data.1.resolution", 32, (r"data\[1\]\.resolution: all sources must share one `resolution` \(tasks are batched "
                              r"together\), got \[16, 32\]\.")),
    # wrong types: one line naming the field, not `'<' not supported between ...`
    ("batch_size", "16", r"batch_size: must be an integer >= 1, got '16'\."),
    ("max_steps", 1.5, r"max_steps: must be an integer >= 1, got 1\.5\."),
    ("conditioning_dropout", "0.1", r"conditioning_dropout: must be a finite number in \[0, 1/3\], got '0\.1'\."),
    ("ema_decay", "0.999", r"ema_decay: must be a finite number in \(0, 1\), or null, got '0\.999'\."),
    ("optim.lr", "1e-4x", r"optim\.lr: must be a finite number > 0, got '1e-4x'\."),
    ("gradient_checkpointing", "yes", r"gradient_checkpointing: must be true or false, got 'yes'\."),
    ("model.ia3_on_attention", "no", r"model\.ia3_on_attention: must be true or false, got 'no'\."),
    ("model.mtu.num_experts", "4", r"model\.mtu\.num_experts: must be an integer >= 1, got '4'\."),
    ("preset", ["sd15"], r"preset: must be one of \['sd15', 'sdxl'\] or null, got \['sd15'\]\."),
    ("resume", True, r"resume: must be 'none', 'auto' or a checkpoint folder, got True\."),
    # values out of range
    ("seed", -1, r"seed: must be an integer >= 0, got -1\."),
    ("model.mtu.num_experts", 0, r"model\.mtu\.num_experts: must be an integer >= 1, got 0\."),
    ("model.mtu.top_k", 3, r"model\.mtu\.top_k: must be None or an integer in \[1, num_experts=2\], got 3\."),
    ("model.base", "", r"model\.base: must be a diffusers pipeline folder or hub id, got ''\."),
    ("model.method", "dora", r"model\.method: must be one of \('mtu', .*\), got 'dora'\."),
    ("mixed_precision", "fp8", r"mixed_precision: must be one of \('no', 'fp16', 'bf16'\), got 'fp8'\."),
    ("preset", "sd3", r"preset: must be one of \['sd15', 'sdxl'\] or null, got 'sd3'\."),
]


@pytest.mark.parametrize("dotted, value, message", CASES,
                         ids=[f"{d}={'(missing)' if v is MISSING else repr(v)}" for d, v, _ in CASES])
def test_a_bad_field_is_one_line_naming_its_path_and_value(dotted, value, message):
    with pytest.raises(InputError) as caught:
        config_from_dict(_changed(dotted, value))
    assert "\n" not in str(caught.value)
    assert caught.value.field and str(caught.value).startswith(caught.value.field + ": ")
    assert re.fullmatch(message, str(caught.value)), str(caught.value)


def test_the_same_checks_hold_through_the_python_api():
    """`TrainConfig(...)` / `ModelConfig(...)` with dicts for sections and sources check what `config_from_dict`
    checks; a section built alone names its fields from itself (`mtu.granularity`)."""
    from mtu.training import ModelConfig, TrainConfig

    with pytest.raises(InputError, match=r"^model\.mtu\.num_experts: must be an integer >= 1, got 0\.$"):
        TrainConfig(model={"base": "b", "mtu": {"num_experts": 0}}, data=RUN["data"])
    with pytest.raises(InputError, match=r"^data\[1\]\.schema: must be one of"):
        TrainConfig(model=ModelConfig(base="b"), data=[RUN["data"][0], {**RUN["data"][1], "schema": "nope"}])
    with pytest.raises(InputError, match=r"^mtu\.granularity: must be a finite number > 0"):
        ModelConfig(base="b", mtu={"granularity": math.nan})


def _write(path, text: str | bytes):
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("model:\n  base: b\n data: []\n", r"--config: '.*run\.yaml' is not valid YAML: line 3, column 2: .*"),
    ("model: {base: b\n", r"--config: '.*run\.yaml' is not valid YAML: line 2, column 1: .*"),
    ("optim:\n  lr: 1e-4\n  lr: 1e-3\n", (r"--config: '.*run\.yaml' is not valid YAML: line 3, column 3: "
                                         r"key 'lr' is given twice\.")),
    ("- model: {base: b}\n", (r"--config: '.*run\.yaml' must hold a mapping of run fields \(`model:`, `data:`, "
                             r"\.\.\.\), got a list\.")),
    (b"model:\n  base: \xff\xfe\n", r"--config: '.*run\.yaml' is not UTF-8 text \(byte 15 is 0xff\)\."),
], ids=["bad-indent", "unclosed-flow", "duplicate-key", "list-document", "not-utf8"])
def test_a_bad_run_file_is_one_line_naming_the_file_and_line(tmp_path, text, message):
    path = _write(tmp_path / "run.yaml", text)
    with pytest.raises(InputError) as caught:
        load_train_config(path)
    assert "\n" not in str(caught.value) and re.fullmatch(message, str(caught.value)), str(caught.value)


@pytest.mark.parametrize("overrides, message", [
    (["--optim.lr"], r"--optim\.lr: has no value; give one as `--field value` or `--field=value`\."),
    (["optim.lr=1e-4"], r"override 'optim\.lr=1e-4' must look like --section\.field value\."),
    (["--optim.betas", "[0.9,"], r"--optim\.betas: value '\[0\.9,' is not valid YAML: .*"),
    (["--max_steps", "3", "--max_steps.count", "4"], (r"--max_steps\.count: `max_steps` is not a section, so it has "
                                                     r"no fields\.")),
    (["--optim.lr", ".inf"], r"optim\.lr: must be a finite number > 0, got inf\."),
    (["--optim.max_grad_norm", ".nan"], r"optim\.max_grad_norm: must be a finite number >= 0 .*got nan\."),
    (["--batchsize", "8"], r"batchsize: unknown key; did you mean 'batch_size'\? .*"),
], ids=["no-value", "no-dashes", "bad-yaml-value", "not-a-section", "lr-inf", "clip-nan", "typo"])
def test_a_bad_override_is_one_line_naming_it(tmp_path, overrides, message):
    path = _write(tmp_path / "run.yaml", yaml.safe_dump(RUN))
    with pytest.raises(InputError) as caught:
        load_train_config(path, overrides)
    assert "\n" not in str(caught.value) and re.fullmatch(message, str(caught.value)), str(caught.value)


def test_cli_train_prints_one_line_before_loading_anything(tmp_path, capsys):
    """The base does not exist: the field error comes first, so nothing was loaded before the config was checked."""
    from mtu.cli import main

    path = _write(tmp_path / "run.yaml", yaml.safe_dump(_changed("optim.lr", INF)))
    assert main(["train", "--config", str(path)]) == 2
    assert capsys.readouterr().err == "mtu: error: optim.lr: must be a finite number > 0, got inf.\n"


def test_cli_cache_refuses_zero_epochs_before_loading_anything(tmp_path, capsys):
    from mtu.cli import main

    path = _write(tmp_path / "run.yaml", yaml.safe_dump(RUN))
    assert main(["cache", "--config", str(path), "--out", str(tmp_path / "cache"), "--epochs", "0"]) == 2
    assert capsys.readouterr().err == "mtu: error: --epochs: must be an integer >= 1, got 0.\n"
    assert not (tmp_path / "cache").exists()
