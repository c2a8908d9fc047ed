"""Table 3's PEFT baselines are task-specific adapters (issue 12.2): `lora` / `ia3` give each task its own peft
adapter and run every sample through its task's, mixed-task batches included; `lora_shared` / `ia3_shared` keep
the one adapter shared by all tasks that `lora` / `ia3` trained before. A LoRA baseline's rank is matched to MTU's
trainable parameters over all its adapters together."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from diffusers import UNet2DConditionModel

from mtu.training.config import ModelConfig
from mtu.training.methods import build_model, trainable_parameters
from mtu.upcycling import load_base_unet

TASKS = ["t2i", "edit", "sr", "inpaint"]
BASE = "random:tiny"
ADAPTER_TASK = re.compile(r"\.(?:lora_[AB]|ia3_l)\.(\w+)(?:\.|$)")  # ...lora_A.<adapter>.weight, ...ia3_l.<adapter>


@pytest.fixture(scope="module")
def tiny_unet():
    return load_base_unet(BASE)


def _model(tiny_unet, method: str, tasks=TASKS, base: str = BASE, unet=None, **fields):
    """A baseline with every trainable tensor nudged off its init (LoRA's B starts at zero, IA3's vectors at one),
    so that every adapter changes its task's output and gets gradients."""
    torch.manual_seed(0)  # peft draws LoRA's A from the global generator
    model = build_model(unet if unet is not None else copy.deepcopy(tiny_unet),
                        ModelConfig(base=base, method=method, **fields), list(tasks))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in trainable_parameters(model).values():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model


def _adapter_tensors(model, adapter: str) -> dict[str, torch.nn.Parameter]:
    found = {}
    for name, param in model.named_parameters():
        match = ADAPTER_TASK.search(name)
        if match and match.group(1) == adapter:
            found[name] = param
    return found


def _inputs(tasks: list[str], seed: int = 0, width: int = 8):
    """A batch for `tasks`, zero-padded to `width` input channels as the trainer pads a mixed batch."""
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(len(tasks), width, 8, 8, generator=generator)
    for row, task in enumerate(tasks):
        if task == "t2i":
            sample[row, 4:] = 0
    timestep = torch.tensor([10, 500, 999, 250, 700, 40][: len(tasks)])
    return sample, timestep, torch.randn(len(tasks), 7, 32, generator=generator)


def _run(model, tasks: list[str], seed: int = 0) -> torch.Tensor:
    sample, timestep, text = _inputs(tasks, seed)
    if len(set(tasks)) == 1:
        sample = sample[:, : model.task_in_channels(tasks[0])]
    with torch.no_grad():
        return model(sample, timestep, text, task=tasks).sample


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_each_task_has_its_own_adapter(tiny_unet, method):
    model = _model(tiny_unet, method)
    for task in TASKS:
        tensors = _adapter_tensors(model, task)
        assert tensors, f"no {method} adapter named {task!r}: one adapter per task is Table 3's baseline"
        assert all(param.requires_grad for param in tensors.values())
    assert not _adapter_tensors(model, "default")
    assert model.task_adapters == {task: task for task in TASKS}


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_a_mixed_batch_step_moves_only_the_adapters_of_its_tasks(tiny_unet, method):
    # (a) A step on a batch of t2i and edit samples: their adapters and input convs move, those of sr and
    # inpaint (absent) stay bit-identical.
    model = _model(tiny_unet, method).train()
    params = trainable_parameters(model)
    before = {name: param.detach().clone() for name, param in params.items()}
    optimizer = torch.optim.Adam(params.values(), lr=1e-3)
    tasks = ["t2i", "edit", "t2i", "edit"]
    sample, timestep, text = _inputs(tasks)
    F.mse_loss(model(sample, timestep, text, task=tasks).sample, torch.ones(4, 4, 8, 8)).backward()
    optimizer.step()
    for task in TASKS:
        adapter = _adapter_tensors(model, task)
        conv = {name: param for name, param in params.items() if name.startswith(f"unet.conv_in.convs.{task}.")}
        assert adapter and conv
        moved = [name for name in {**adapter, **conv} if not torch.equal(params[name], before[name])]
        if task in tasks:
            assert len(moved) == len(adapter) + len(conv), f"{task}: only {len(moved)} tensors moved"
        else:
            assert moved == [], f"{task} is not in the batch, yet its tensors {moved[:3]} moved"


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_a_tasks_output_depends_on_its_own_adapter_only(tiny_unet, method):
    # (b) Perturbing edit's adapter leaves t2i's output bit-identical, alone and within a mixed batch; perturbing
    # t2i's changes it.
    model = _model(tiny_unet, method).eval()
    mixed = ["t2i", "edit", "sr", "t2i"]
    alone, together, edit_alone = _run(model, ["t2i"] * 2), _run(model, mixed), _run(model, ["edit"] * 2)
    with torch.no_grad():
        for param in _adapter_tensors(model, "edit").values():
            param.mul_(1.5).add_(0.1)
    assert torch.equal(_run(model, ["t2i"] * 2), alone)
    after = _run(model, mixed)
    assert torch.equal(after[[0, 3]], together[[0, 3]]) and torch.equal(after[2], together[2])
    assert not torch.allclose(after[1], together[1]) and not torch.allclose(_run(model, ["edit"] * 2), edit_alone)
    with torch.no_grad():
        for param in _adapter_tensors(model, "t2i").values():
            param.mul_(1.5).add_(0.1)
    assert not torch.allclose(_run(model, ["t2i"] * 2), alone)


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_a_mixed_batch_gives_each_sample_its_single_task_output(tiny_unet, method):
    model = _model(tiny_unet, method).eval()
    tasks = ["sr", "t2i", "edit", "sr", "inpaint"]
    together = _run(model, tasks, seed=3)
    sample, timestep, text = _inputs(tasks, seed=3)
    with torch.no_grad():
        for row, task in enumerate(tasks):
            width = model.task_in_channels(task)
            alone = model(sample[row:row + 1, :width], timestep[row:row + 1], text[row:row + 1], task=task).sample
            torch.testing.assert_close(together[row:row + 1], alone, rtol=1e-5, atol=1e-5)


def test_gradient_checkpointing_recomputes_each_group_with_its_adapter(tiny_unet):
    tasks = ["t2i", "edit", "sr", "edit"]
    grads = []
    for checkpointing in (False, True):
        model = _model(tiny_unet, "lora").train()
        if checkpointing:
            model.enable_gradient_checkpointing()
        sample, timestep, text = _inputs(tasks)
        model(sample, timestep, text, task=tasks).sample.square().mean().backward()
        grads.append({name: param.grad for name, param in trainable_parameters(model).items()})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        if grad is None:
            assert grads[1][name] is None, name
        else:
            torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_save_and_load_reproduce_every_tasks_output(tiny_unet, method, tmp_path):
    # (c) The folder holds every task's adapter (safetensors and JSON only); loaded, each task and a mixed batch
    # give the same outputs.
    from mtu.training.methods import TaskAdapterModel, load_baseline, save_baseline

    model = _model(tiny_unet, method).eval()
    folder = save_baseline(model, tmp_path / "final")
    assert sorted(path.name for path in folder.iterdir()) == ["method.json", "trainable.safetensors"]
    record = json.loads((folder / "method.json").read_text())
    assert record["method"] == method and record["adapters"] == {task: task for task in TASKS}
    saved = load_file(str(folder / "trainable.safetensors"))
    assert all(any(f".{task}." in name or name.endswith(f".{task}") for name in saved) for task in TASKS)
    loaded = load_baseline(folder, base=copy.deepcopy(tiny_unet))
    assert isinstance(loaded, TaskAdapterModel) and loaded.task_adapters == model.task_adapters
    assert not any(param.requires_grad for param in loaded.parameters())
    for task in TASKS:
        assert torch.equal(_run(loaded, [task] * 2), _run(model, [task] * 2)), task
    mixed = ["inpaint", "t2i", "sr", "edit"]
    assert torch.equal(_run(loaded, mixed), _run(model, mixed))


def test_the_pipeline_samples_each_task_with_its_adapter(tmp_path):
    from mtu.pipelines import MTUPipeline
    from mtu.training.methods import TaskAdapterModel, save_baseline

    from .training_parts import tiny_pipeline_folder

    base = str(tiny_pipeline_folder(tmp_path))
    model = _model(None, "lora", tasks=["t2i", "edit"], base=base, unet=load_base_unet(base))
    folder = save_baseline(model, tmp_path / "final")
    pipe = MTUPipeline.from_base(base, folder)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.unet, TaskAdapterModel)

    def t2i():
        generator = torch.Generator().manual_seed(0)
        return pipe("t2i", "a red square", num_inference_steps=2, generator=generator, output_type="np").images

    first = t2i()
    with torch.no_grad():
        for param in _adapter_tensors(pipe.unet, "edit").values():
            param.mul_(2.0).add_(0.3)
    assert (t2i() == first).all()
    with torch.no_grad():
        for param in _adapter_tensors(pipe.unet, "t2i").values():
            param.mul_(2.0).add_(0.3)
    assert not (t2i() == first).all()


def _count(model) -> int:
    return sum(param.numel() for param in trainable_parameters(model).values())


def test_lora_rank_matches_mtus_trainable_parameters_over_all_task_adapters(tiny_unet):
    # (d) The protocol: all task adapters and task input convs together hold about MTU's trainable count, so the
    # per-task rank is about the shared adapter's rank divided by the number of tasks.
    from mtu.training.methods import lora_trainable_count, matched_lora_rank

    target = _count(build_model(copy.deepcopy(tiny_unet), ModelConfig(base=BASE, method="mtu",
                                                                       mtu={"num_experts": 4}), TASKS))
    per_task = matched_lora_rank(tiny_unet, TASKS, target, per_task=True)
    shared = matched_lora_rank(tiny_unet, TASKS, target, per_task=False)
    assert per_task > 1 and abs(per_task - shared / len(TASKS)) <= 1
    for rank, method, flag in ((per_task, "lora", True), (shared, "lora_shared", False)):
        built = _count(build_model(copy.deepcopy(tiny_unet), ModelConfig(base=BASE, method=method, lora_rank=rank),
                                   TASKS))
        assert built == lora_trainable_count(tiny_unet, TASKS, rank, per_task=flag)
        step = lora_trainable_count(tiny_unet, TASKS, rank + 1, flag) - built
        assert abs(built - target) <= step / 2, (method, rank, built, target)
    # Per task, each adapter is a quarter of the shared one's size at the same rank: four adapters, one budget.
    one = lora_trainable_count(tiny_unet, TASKS, 1, per_task=True) - lora_trainable_count(tiny_unet, TASKS, 0, True)
    assert one == len(TASKS) * (lora_trainable_count(tiny_unet, TASKS, 1, per_task=False)
                                - lora_trainable_count(tiny_unet, TASKS, 0, per_task=False))


@pytest.mark.parametrize("method", ["lora_shared", "ia3_shared"])
def test_the_shared_variant_keeps_one_adapter_for_all_tasks(tiny_unet, method):
    # (e) One "default" adapter, used by every task: perturbing it moves every task's output.
    model = _model(tiny_unet, method).eval()
    assert model.task_adapters == {task: "default" for task in TASKS}
    assert _adapter_tensors(model, "default") and not any(_adapter_tensors(model, task) for task in TASKS)
    before = {task: _run(model, [task] * 2) for task in TASKS}
    mixed = _run(model, ["sr", "t2i", "edit", "inpaint"])
    for row, task in enumerate(["sr", "t2i", "edit", "inpaint"]):
        assert not torch.equal(mixed[row], torch.zeros_like(mixed[row]))
    with torch.no_grad():
        for param in _adapter_tensors(model, "default").values():
            param.mul_(1.5).add_(0.1)
    assert all(not torch.allclose(_run(model, [task] * 2), before[task]) for task in TASKS)


def test_a_shared_baseline_saved_before_per_task_adapters_loads_as_shared(tiny_unet, tmp_path):
    # A `lora` run's final/ from before issue 12: method.json without "adapters" or model fields (those are in the
    # run's config.yaml), weights of one "default" adapter. It loads as the `lora_shared` it was.
    from mtu.training.methods import load_baseline

    model = _model(tiny_unet, "lora_shared", lora_rank=3, lora_alpha=6.0).eval()
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    save_file({name: param.detach().contiguous() for name, param in trainable_parameters(model).items()},
              str(run / "final" / "trainable.safetensors"))
    (run / "final" / "method.json").write_text(json.dumps({"method": "lora", "tasks": TASKS,
                                                           "unconditional_text": None}))
    (run / "config.yaml").write_text(f"model:\n  base: {BASE}\n  method: lora\n  lora_rank: 3\n  lora_alpha: 6.0\n")
    loaded = load_baseline(run / "final", base=copy.deepcopy(tiny_unet))
    assert loaded.task_adapters == {task: "default" for task in TASKS}
    assert loaded.baseline_config.method == "lora_shared"
    for task in TASKS:
        assert torch.equal(_run(loaded, [task] * 2), _run(model, [task] * 2)), task


def test_method_names(tiny_unet):
    for method in ("lora", "ia3", "lora_shared", "ia3_shared"):
        assert ModelConfig(base=BASE, method=method).method == method
    with pytest.raises(ValueError, match="must be one of"):
        ModelConfig(base=BASE, method="lora_per_task")


@pytest.mark.parametrize("method", ["full", "lora", "ia3", "lora_shared"])
def test_a_baseline_folds_each_task_into_a_stock_unet(tiny_unet, method):
    """Issue 14.5: every method's output is usable where a stock UNet is wanted. Folding merges the task's adapter
    (peft's merge) and takes its input conv; the folded UNet gives the baseline's output for that task, and the
    baseline itself is unchanged (its other tasks still run their own adapters)."""
    model = _model(tiny_unet, method).eval()
    if method == "full":
        with torch.no_grad():  # the fine-tune moved the UNet's own weights too
            for param in model.unet.parameters():
                param.add_(0.01)
    before = {task: _run(model, [task, task]) for task in ("t2i", "edit")}
    for task in ("t2i", "edit"):
        folded = model.fold(task)
        assert type(folded) is UNet2DConditionModel and folded.config.in_channels == model.task_in_channels(task)
        assert not any("lora" in name or "ia3" in name for name in folded.state_dict())
        sample, timestep, text = _inputs([task, task])
        with torch.no_grad():
            output = folded(sample[:, : model.task_in_channels(task)], timestep, text).sample
        torch.testing.assert_close(output, before[task], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(_run(model, [task, task]), before[task], rtol=0, atol=0)
