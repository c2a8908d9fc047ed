"""Task text encoders (`model.task_text_encoders`): a task's own trained copy of the base's text encoder, carried by
the model through training, checkpoints, resume, saving, loading, the pipeline and the exports."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mtu
from mtu.architectures import build_unet
from mtu.upcycling.serialization import read_adapter_config
from mtu.errors import InputError
from mtu.pipelines import MTUPipeline
from mtu.training import config_from_dict, train
from mtu.training.trainer import Trainer

from .conftest import nudge, tiny_inputs
from .diffusers_parts import tiny_components, tiny_text_encoder
from .training_parts import tiny_run_config

ENCODER_FILE = Path("text_encoders") / "edit" / "model.safetensors"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("task-text")


def _config(root, name, **overrides):
    config = tiny_run_config(root, **overrides)
    config["output_dir"] = str(Path(root) / name)
    config["model"]["task_text_encoders"] = ["edit"]
    config["optim"]["text_encoder_lr"] = 5e-3
    return config_from_dict(config)


@torch.no_grad()
def _nudge_encoder(encoder, scale: float = 0.05, seed: int = 3) -> None:
    generator = torch.Generator().manual_seed(seed)
    for param in encoder.parameters():
        param.add_(scale * torch.randn(param.shape, generator=generator))


def _model_with_edit_encoder(base):
    model = mtu.upcycle(base, mtu.MTUConfig(tasks=["t2i", "edit"], num_experts=2))
    nudge(model)
    encoder = copy.deepcopy(tiny_text_encoder())
    _nudge_encoder(encoder)
    model.set_task_text_encoders({"edit": encoder})
    return model.eval()


@pytest.mark.parametrize("overrides, field, message", [
    ({"model": {"task_text_encoders": ["sr"]}}, "model.task_text_encoders", "not one of the model's tasks"),
    ({"model": {"task_text_encoders": "edit"}}, "model.task_text_encoders", "a list of task names"),
    ({"model": {"task_text_encoders": ["edit"], "method": "lora"}}, "model.task_text_encoders", "method 'lora'"),
    ({"optim": {"text_encoder_lr": 0}}, "optim.text_encoder_lr", "> 0"),
])
def test_bad_settings_are_refused_naming_the_field(workspace, overrides, field, message):
    config = tiny_run_config(workspace)
    for section, values in overrides.items():
        config[section] = {**config[section], **values}
    with pytest.raises(InputError, match=message) as caught:
        config_from_dict(config)
    assert str(caught.value).startswith(field)


def test_rows_of_a_task_with_its_own_encoder_read_it_and_the_others_are_unchanged(base):
    """A mixed batch given token ids: the edit row is exactly the edit-only call on the edit encoder's states; the
    t2i row is exactly the call on the base's states (after nudging the adapter and the encoder)."""
    model = _model_with_edit_encoder(base)
    encoder = model.text_encoders["edit"]
    inputs = tiny_inputs(batch=2, channels=8)
    ids = torch.randint(0, encoder.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base_states = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(5))
        mixed = model(inputs["sample"], inputs["timestep"], base_states, task=["t2i", "edit"],
                      text_input_ids=ids).sample
        t2i = model(inputs["sample"][:1, :4], inputs["timestep"][:1], base_states[:1], task="t2i").sample
        edit = model(inputs["sample"][1:], inputs["timestep"][1:], encoder(ids[1:])[0], task="edit").sample
        base_read = model(inputs["sample"][1:], inputs["timestep"][1:], base_states[1:], task="edit").sample
    torch.testing.assert_close(mixed[:1], t2i, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mixed[1:], edit, rtol=1e-5, atol=1e-6)
    assert (edit - base_read).abs().max() > 1e-3  # the edit row really reads its own encoder


def test_the_edit_copy_trains_the_base_encoder_stays_and_the_adapter_carries_it(workspace):
    config = _config(workspace, "train", max_steps=4, checkpoint_every=2)
    trainer = Trainer(config)
    base_before = {k: v.clone() for k, v in trainer.parts.text_encoder.state_dict().items()}
    start = {k: v.clone() for k, v in trainer.model.text_encoders["edit"].state_dict().items()}
    summary = trainer.train()
    assert all(torch.equal(base_before[k], v) for k, v in trainer.parts.text_encoder.state_dict().items())
    final = Path(summary["final"])
    record = json.loads((final / "mtu_config.json").read_text())
    assert record["task_text_encoders"] == ["edit"]
    saved = load_file(str(final / ENCODER_FILE))
    moved = [name for name, tensor in saved.items() if name in start and not torch.equal(tensor, start[name])]
    assert any("token_embedding" in name for name in moved) and any("layers.0" in name for name in moved)
    loaded = mtu.load_mtu(final)
    assert list(loaded.text_encoders) == ["edit"]
    for name, tensor in loaded.text_encoders["edit"].state_dict().items():
        torch.testing.assert_close(tensor, saved[name], rtol=0, atol=0)


def test_the_trainer_encodes_with_the_base_only_the_rows_that_read_it(workspace, monkeypatch):
    """`Trainer.encode_text` on a mixed batch: the t2i row is the base's encoding of that prompt, the edit row
    (re-encoded by the model from the token ids) costs the base encoder nothing, and the model's output is the
    same as from the base's states on every row (the edit row's are replaced either way)."""
    from mtu.training import components

    trainer = Trainer(_config(workspace, "split", max_steps=1))
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    nudge(model)
    _nudge_encoder(model.text_encoders["edit"])
    prompts, tasks = ["a red circle", "make the circle blue"], ["t2i", "edit"]
    seen = []
    real = components.encode_prompts
    monkeypatch.setattr("mtu.training.trainer.encode_prompts",
                        lambda parts, rows, *args: seen.append(list(rows)) or real(parts, rows, *args))
    hidden, kwargs = trainer.encode_text(prompts, tasks)
    assert seen == [["a red circle"]]
    full, _ = real(trainer.parts, prompts, trainer.feed.resolution, trainer.device)
    torch.testing.assert_close(hidden[0], full[0])
    assert not hidden[1].any()
    sample = torch.randn(2, max(trainer.task_channels.values()), 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        split = model(sample, torch.tensor([10, 500]), hidden, task=tasks, **kwargs).sample
        whole = model(sample, torch.tensor([10, 500]), full, task=tasks, **kwargs).sample
    torch.testing.assert_close(split, whole, rtol=0, atol=0)


def test_optimizer_gives_the_encoders_their_own_rate(workspace):
    trainer = Trainer(_config(workspace, "groups", max_steps=2))
    named = dict(trainer.accelerator.unwrap_model(trainer.model).named_parameters())
    encoder_ids = {id(p) for name, p in named.items() if name.startswith("text_encoders.edit.")}
    groups = trainer.optimizer.param_groups
    own = [group for group in groups if {id(p) for p in group["params"]} == encoder_ids]
    assert len(groups) == 2 and len(own) == 1 and own[0]["initial_lr"] == 5e-3


def test_resume_is_exact_with_the_encoder(workspace):
    straight = train(_config(workspace, "straight", max_steps=4, checkpoint_every=2, keep_checkpoints=3))
    shutil.copytree(workspace / "straight", workspace / "resumed")
    shutil.rmtree(workspace / "resumed" / "final")
    shutil.rmtree(workspace / "resumed" / "checkpoints" / "checkpoint-0000004")
    train(_config(workspace, "resumed", max_steps=4, checkpoint_every=2, keep_checkpoints=3, resume="auto"))
    for name in (Path("mtu_model.safetensors"), ENCODER_FILE):
        expected = load_file(str(Path(straight["final"]) / name))
        actual = load_file(str(workspace / "resumed" / "final" / name))
        assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)


def test_a_checkpoint_loads_as_a_model_with_its_encoder(workspace):
    from mtu.training.export import model_from_checkpoint

    summary = train(_config(workspace, "checkpoint", max_steps=2, checkpoint_every=2))
    model = model_from_checkpoint(workspace / "checkpoint" / "checkpoints" / "checkpoint-0000002")
    saved = load_file(str(Path(summary["final"]) / ENCODER_FILE))  # final/ holds the same EMA weights
    assert all(torch.equal(tensor, saved[name]) for name, tensor in model.text_encoders["edit"].state_dict().items())


def test_save_load_and_the_pipeline_use_the_tasks_own_encoder(base, tmp_path):
    model = _model_with_edit_encoder(base)
    model.save_pretrained(tmp_path / "adapter")
    loaded = mtu.load_mtu(tmp_path / "adapter", base=build_unet("tiny", seed=0))
    for name, tensor in model.text_encoders["edit"].state_dict().items():
        assert torch.equal(tensor, loaded.text_encoders["edit"].state_dict()[name])
    components = tiny_components(loaded, tmp_path)
    pipe = MTUPipeline(components["vae"], components["text_encoder"], components["tokenizer"], loaded,
                       components["scheduler"])
    assert pipe.text_encoder_for("edit") is loaded.text_encoders["edit"]
    assert pipe.text_encoder_for("t2i") is pipe.text_encoder
    with torch.no_grad():
        edit = pipe.encode_text(["make it blue"], "cpu", task="edit")["encoder_hidden_states"]
        t2i = pipe.encode_text(["make it blue"], "cpu", task="t2i")["encoder_hidden_states"]
        ids = pipe.tokenizer(["make it blue"], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        torch.testing.assert_close(edit, loaded.text_encoders["edit"](ids)[0], rtol=0, atol=0)
        torch.testing.assert_close(t2i, pipe.text_encoder(ids)[0], rtol=0, atol=0)
    assert pipe.fold("edit").text_encoder is loaded.text_encoders["edit"]
    assert pipe.fold("t2i").text_encoder is pipe.text_encoder
    # A saved pipeline folder keeps the encoder beside the adapter and reloads to the same outputs.
    kwargs = {"prompt": "make it blue", "image": torch.rand(1, 3, 16, 16), "num_inference_steps": 2}
    first = pipe("edit", generator=torch.Generator().manual_seed(0), output_type="pt", **kwargs).images
    model_only = MTUPipeline(components["vae"], components["text_encoder"], components["tokenizer"],
                             mtu.load_mtu(tmp_path / "adapter", base=build_unet("tiny", seed=0)),
                             components["scheduler"])
    model_only.unet.text_encoders.pop("edit")
    without = model_only("edit", generator=torch.Generator().manual_seed(0), output_type="pt", **kwargs).images
    assert (first - without).abs().max() > 1e-4  # sampling reads the task's encoder


def test_diffusers_export_writes_the_tasks_encoder_as_the_pipelines(base, tmp_path):
    from transformers import CLIPTextModel

    from mtu.export.diffusers_export import write_diffusers_pipeline

    model = _model_with_edit_encoder(base)
    components = tiny_components(model, tmp_path)
    pipe = MTUPipeline(components["vae"], components["text_encoder"], components["tokenizer"], model,
                       components["scheduler"])
    write_diffusers_pipeline(pipe, "edit", tmp_path / "edit")
    written = CLIPTextModel.from_pretrained(tmp_path / "edit" / "text_encoder", use_safetensors=True)
    for name, tensor in model.text_encoders["edit"].state_dict().items():
        assert torch.equal(tensor, written.state_dict()[name])


def test_an_adapter_whose_encoder_is_missing_or_a_pickle_is_refused(base, tmp_path):
    model = _model_with_edit_encoder(base)
    model.save_pretrained(tmp_path / "adapter")
    weights = tmp_path / "adapter" / ENCODER_FILE
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(InputError, match="does not hold one"):
        mtu.load_mtu(tmp_path / "adapter", base=build_unet("tiny", seed=0))
    weights.write_bytes(b"\x80\x04not really a pickle")  # a pickle's first bytes under the safetensors name
    with pytest.raises(InputError, match="pickle"):
        mtu.load_mtu(tmp_path / "adapter", base=build_unet("tiny", seed=0))
    record = json.loads((tmp_path / "adapter" / "mtu_config.json").read_text())
    record["task_text_encoders"] = ["sr"]
    (tmp_path / "adapter" / "mtu_config.json").write_text(json.dumps(record))
    with pytest.raises(InputError, match="task_text_encoders.*'sr'"):
        read_adapter_config(tmp_path / "adapter")


def test_onnx_export_writes_the_tasks_encoder(base, tmp_path):
    pytest.importorskip("onnxruntime")
    from mtu.export.onnx_pipeline import OnnxTaskPipeline, write_onnx_pipeline

    model = _model_with_edit_encoder(base)
    components = tiny_components(model, tmp_path)
    pipe = MTUPipeline(components["vae"], components["text_encoder"], components["tokenizer"], model,
                       components["scheduler"])
    write_onnx_pipeline(pipe, "edit", tmp_path / "onnx")
    with torch.no_grad():
        expected = pipe.encode_text(["make it blue"], "cpu", task="edit")["encoder_hidden_states"]
        base_read = pipe.encode_text(["make it blue"], "cpu", task="t2i")["encoder_hidden_states"]
    actual = OnnxTaskPipeline(tmp_path / "onnx").encode_text(["make it blue"])
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
    assert (actual - base_read).abs().max() > 1e-3


def test_task_switching_unet_names_the_active_tasks_encoder(base):
    from mtu.export import TaskSwitchingUNet

    model = _model_with_edit_encoder(base)
    switcher = TaskSwitchingUNet(model)
    assert switcher.text_encoder is None  # t2i, the first task, reads the base's
    switcher.set_task("edit")
    assert switcher.text_encoder is model.text_encoders["edit"]


def test_an_sdxl_base_is_refused_before_its_weights_are_loaded(workspace, monkeypatch):
    import mtu.training.trainer as trainer_module

    from .training_parts import tiny_sdxl_pipeline_folder

    config = tiny_run_config(workspace)
    config["output_dir"] = str(workspace / "sdxl-refused")
    config["model"].update(base=str(tiny_sdxl_pipeline_folder(workspace)), task_text_encoders=["edit"])

    def no_loading(*args, **kwargs):
        raise AssertionError("the base was loaded before the refusal")

    monkeypatch.setattr(trainer_module, "load_base", no_loading)
    with pytest.raises(InputError, match="SDXL") as caught:
        Trainer(config_from_dict(config))
    assert str(caught.value).startswith("model.task_text_encoders")


def test_the_sdxl_pipeline_refuses_a_model_with_task_text_encoders():
    from mtu.pipelines.common import check_unet

    from .sdxl_parts import tiny_sdxl_unet

    model = mtu.upcycle(tiny_sdxl_unet(), mtu.MTUConfig(tasks=["t2i", "edit"], num_experts=2))
    check_unet(model, "MTUStableDiffusionXLPipeline", sdxl=True)  # without one: accepted
    model.set_task_text_encoders({"edit": tiny_text_encoder()})
    with pytest.raises(InputError, match=r"tasks \['edit'\] their own text encoder"):
        check_unet(model, "MTUStableDiffusionXLPipeline", sdxl=True)
