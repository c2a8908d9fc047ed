"""The training loop (Eq. 2 over all tasks at once), on accelerate: one process, DDP, FSDP or DeepSpeed alike.

    mtu train --config run.yaml [--section.field value ...]     (or `accelerate launch -m mtu.cli train ...`)

A run folder holds config.yaml (the resolved config), checkpoints/, logs/ and final/ (the trained adapter).
"""

from __future__ import annotations

import gc
import json
import os
import random
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, gather_object
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from ..errors import InputError
from ..outputs import claim_run_folder
from ..upcycling.files import atomic_write_text
from ..upcycling.serialization import check_finite
from ..upcycling.task_model import TaskModel
from ..upcycling.text_encoders import is_text_encoder_parameter
from .checkpoint import (comparable_config, load_checkpoint, resolve_resume, save_checkpoint,
                         unshared_optimizer_state, zero_optimizer_state)
from .components import (encode_prompts, has_two_text_encoders, load_base, prompt_token_ids,
                         sdxl_added_conditions)
from .config import TrainConfig
from .data_feed import DataFeed
from .methods import build_model, save_baseline, trainable_parameters
from .sharding import gather_full, is_sharded, reshard_optimizer_state, shard_like
from .step import micro_step_loss


class NonFiniteRun(InputError, RuntimeError):
    """The run stopped because its loss or weights went non-finite. One line at the CLI (an `InputError`: the cause
    is a setting such as `optim.lr`, or the data, not a bug), and a RuntimeError as before."""


def _all_finite(tensor: torch.Tensor) -> bool:
    local = tensor.to_local() if is_sharded(tensor) else tensor  # this process's shard (FSDP)
    return bool(torch.isfinite(local).all())


def _has_accelerator_device() -> bool:
    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(mps and mps.is_available()) or bool(xpu and xpu.is_available())


def _deepspeed_launch() -> bool:
    """`accelerate launch --use_deepspeed` (its environment says so). accelerate's `cpu=True` would silently drop
    DeepSpeed for plain gloo processes, so on a machine without a GPU the run leaves `cpu` unset and DeepSpeed runs
    on its own CPU accelerator (gloo)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true", "yes")


def is_router_parameter(name: str) -> bool:
    """The MTU routers' weights and the task embeddings they read (`optim.router_lr`)."""
    return ".router." in name or name == "task_embeddings"


def _optimizer(config: TrainConfig, named: dict[str, torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Adam/AdamW over the trainable parameters: one group, plus one for the routers and task embeddings when
    `optim.router_lr` gives them their own peak rate, and one for the task text encoders when
    `optim.text_encoder_lr` does (the schedule scales every group alike)."""
    optim = config.optim
    rates = {"router": optim.router_lr, "text_encoder": optim.text_encoder_lr}
    kinds = {name: "router" if is_router_parameter(name) else
             "text_encoder" if is_text_encoder_parameter(name) else "main" for name in named}
    groups = [{"params": [param for name, param in named.items() if rates.get(kinds[name]) is None]}]
    for kind, lr in rates.items():
        params = [param for name, param in named.items() if kinds[name] == kind]
        if lr is not None and params:
            groups.append({"params": params, "lr": lr})
    kind = torch.optim.AdamW if optim.optimizer == "adamw" else torch.optim.Adam
    return kind(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps, weight_decay=optim.weight_decay)


class Trainer:
    """Builds everything a run needs from a `TrainConfig` and runs it; `train()` returns a summary dict."""

    def __init__(self, config: TrainConfig, *, overwrite: bool = False):
        self.config = config
        if config.mixed_precision == "fp16" and not _has_accelerator_device():
            # accelerate autocasts only bf16 on the CPU, so fp16 frozen weights would meet fp32 activations mid-run.
            raise InputError("'fp16' needs a GPU (CUDA, XPU or MPS); this run is on the CPU, where torch does not "
                             "autocast to fp16. Use 'bf16' or 'no'.", field="mixed_precision")
        self.run_dir = Path(config.output_dir)
        # Before any heavy work: output_dir is new, empty or this trainer's own run (or `overwrite`), and the run
        # resumes only its own checkpoints.
        self.output = claim_run_folder(config, overwrite=overwrite)
        self.resume_from = resolve_resume(config, self.run_dir)
        self.accelerator = Accelerator(
            # Without an accelerator device, accelerate joins launched processes (gloo) only when told cpu=True;
            # otherwise each process would silently train on its own.
            cpu=not _has_accelerator_device() and not _deepspeed_launch(),
            mixed_precision=config.mixed_precision,
            log_with=None if config.log_with == "none" else config.log_with,
            project_dir=str(self.run_dir / "logs"),
            # Routing decides which task convs/LNs/experts a micro-batch touches; the rest get no gradient.
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        self.deepspeed = self.accelerator.distributed_type == DistributedType.DEEPSPEED
        if self.deepspeed:
            self._configure_deepspeed()
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision,
                                                                                 torch.float32)
        if config.model.task_text_encoders and has_two_text_encoders(config.model.base, config.model.variant):
            raise InputError("gives tasks their own copy of the text encoder, for SD 1.x/2.x bases; this base is "
                             "SDXL (two text encoders). Remove `model.task_text_encoders`.",
                             field="model.task_text_encoders")
        self.feed = DataFeed(config, self.accelerator.process_index, self.accelerator.num_processes)
        self.parts, unet = load_base(config.model.base, variant=config.model.variant)
        self.parts.to(self.accelerator.device, self.weight_dtype)
        self.model = build_model(unet, config.model, self.feed.tasks, text_encoder=self.parts.text_encoder)
        # Tasks whose samples read their own text encoder (`encode_text` hands the model their token ids).
        self.own_text_tasks = set(getattr(self.model, "text_encoders", {}).keys())
        # A dropped text is encoded as the base's pipelines sample the unconditional branch (SDXL: zeros, where its
        # `force_zeros_for_empty_prompt`), or as the adapter continued from records; recorded in the adapter, so
        # `MTUStableDiffusionXLPipeline` samples it the same way.
        recorded = getattr(self.model, "unconditional_text", None)
        self.unconditional = recorded if recorded and self.parts.is_sdxl else self.parts.unconditional_text
        self.model.unconditional_text = self.unconditional
        for param in self.model.parameters():  # frozen weights in the compute dtype, trainable ones in fp32
            param.data = param.data.float() if param.requires_grad else param.data.to(self.weight_dtype)
        if config.gradient_checkpointing:
            self.model.enable_gradient_checkpointing()
        self.task_channels = {task: self.model.task_in_channels(task) for task in self.feed.tasks}
        self.optimizer = _optimizer(config, trainable_parameters(self.model))
        self.lr_scheduler = get_scheduler(config.optim.schedule, self.optimizer,
                                          num_warmup_steps=config.optim.warmup_steps,
                                          num_training_steps=config.max_steps)
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        # Taken after `prepare`: FSDP2 replaces the parameters with sharded ones (the optimizer is re-pointed).
        self.params = trainable_parameters(self.accelerator.unwrap_model(self.model))
        self.sharded = any(is_sharded(param) for param in self.params.values())
        self.ema = EMAModel(list(self.params.values()), decay=config.ema_decay) if config.ema_decay else None
        self.step, self.counters = 0, {"nonfinite_skipped": 0, "nonfinite_in_a_row": 0}
        self.history: list[dict] = []
        self.tasks_seen: set[str] = set()
        self._batches = None  # the batch iterator, made by the first `train_step` (after a resume)
        self._live_weights: dict[str, torch.Tensor] | None = None  # kept while `trained_model` shows EMA weights

    # -- the public view of the run ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The device this process trains on (batches, text encodings)."""
        return self.accelerator.device

    def num_trainable_parameters(self) -> int:
        """How many parameters the optimizer updates (all processes' shards together)."""
        return sum(param.numel() for param in self.params.values())

    @torch.no_grad()
    def trained_model(self, ema: bool = True) -> TaskModel:
        """The trained model (after `train()`): unwrapped, on the CPU, in eval mode. Its trainable weights are the
        EMA weights (what `export` wrote) when `ema` is True and the run keeps an EMA, else the last step's.

        This is the trainer's own model, moved, not a copy; a later call may switch between the two sets of
        weights. It needs whole tensors: under FSDP, load the exported `final/` folder instead.
        """
        if self.sharded:
            raise InputError("`trained_model` needs whole tensors, but this run's parameters are FSDP shards; load "
                             "the exported final/ folder instead (`mtu.load_mtu`, or `load_baseline` for a baseline).")
        model = self.accelerator.unwrap_model(self.model).to("cpu").eval()
        if ema and self.ema is not None and self._live_weights is None:
            self._live_weights = {name: param.detach().clone() for name, param in self.params.items()}
            self.ema.copy_to(list(self.params.values()))
        elif not (ema and self.ema is not None) and self._live_weights is not None:
            for name, param in self.params.items():
                param.copy_(self._live_weights[name])
            self._live_weights = None
        return model

    def _configure_deepspeed(self) -> None:
        """Fills the DeepSpeed config's "auto" values from the run config (the trainer feeds its own batches, so
        accelerate cannot infer the micro-batch size), and refuses what this trainer does not do under DeepSpeed."""
        config, plugin = self.config, self.accelerator.state.deepspeed_plugin
        if config.gradient_accumulation_steps != 1:
            raise InputError(f"`gradient_accumulation_steps` must be 1 under DeepSpeed (got "
                             f"{config.gradient_accumulation_steps}); use a larger `batch_size`, or DDP/FSDP.")
        for name in ("router_lr", "text_encoder_lr"):
            if getattr(config.optim, name) is not None:
                raise InputError(f"`optim.{name}` (a parameter group of its own) is not supported under DeepSpeed; "
                                 f"use DDP or FSDP, or leave it unset.", field=f"optim.{name}")
        if self.resume_from is not None:
            raise InputError(f"resuming under DeepSpeed is not supported; resume {str(self.resume_from)!r} with one "
                             f"process, DDP or FSDP (checkpoints hold whole tensors and move between them).")
        values = {"train_micro_batch_size_per_gpu": config.batch_size, "gradient_accumulation_steps": 1,
                  "gradient_clipping": config.optim.max_grad_norm}
        for key, value in values.items():
            if key not in plugin.deepspeed_config or plugin.is_auto(key):
                plugin.deepspeed_config[key] = value

    def _optimizer_state(self) -> dict:
        """The optimizer's state dict with whole tensors, in torch's per-parameter layout for every backend
        (DeepSpeed's flat ZeRO moments gathered per parameter: `zero_optimizer_state`)."""
        if self.deepspeed:
            return zero_optimizer_state(self.optimizer, list(self.params.values()))
        return gather_full(self.optimizer.state_dict())

    def encode_text(self, prompts: list[str], tasks: list[str] | None = None):
        """(encoder_hidden_states, extra UNet kwargs) by the base's text encoder, from the cache when it holds text
        embeddings. `tasks`: each prompt's task; when one of them has its own text encoder
        (`model.task_text_encoders`), the kwargs carry the prompts' token ids (`text_input_ids`) for the model to
        encode those rows with it, inside its forward."""
        cache, device = self.feed.cache, self.accelerator.device
        own = tasks is not None and bool(self.own_text_tasks.intersection(tasks))
        if cache is not None and cache.has_text:
            hidden, pooled = cache.text_embeddings(prompts)
            kwargs = {} if pooled is None else sdxl_added_conditions(pooled.to(device), self.feed.resolution)
            hidden = hidden.to(device, self.weight_dtype)
        elif own:  # never SDXL (refused with task encoders): the base encodes only the rows the model will not
            hidden = self._base_states_except_own(prompts, tasks)
            kwargs = {}
        else:
            hidden, kwargs = encode_prompts(self.parts, prompts, self.feed.resolution, device)
        if own:
            kwargs = {**kwargs, "text_input_ids": prompt_token_ids(self.parts.tokenizer, prompts, device)}
        return hidden, kwargs

    def _base_states_except_own(self, prompts: list[str], tasks: list[str]) -> torch.Tensor:
        """The base encoder's hidden states for the rows whose task reads it; zeros for the rows of tasks with their
        own text encoder, which the model replaces inside its forward (`MTUModel.task_text_states`), so the base
        encoder does no work for them."""
        device = self.accelerator.device
        others = [index for index, task in enumerate(tasks) if task not in self.own_text_tasks]
        shape = (len(prompts), self.parts.tokenizer.model_max_length, self.parts.text_encoder.config.hidden_size)
        hidden = torch.zeros(shape, device=device, dtype=self.parts.text_encoder.dtype)
        if others:
            states, _ = encode_prompts(self.parts, [prompts[index] for index in others], self.feed.resolution, device)
            hidden[torch.tensor(others, device=device)] = states.to(hidden.dtype)
        return hidden

    # -- state ---------------------------------------------------------------------------------------------------
    def state(self) -> dict:
        """The whole run state, with whole tensors (gathering FSDP shards is collective: call on every rank)."""
        state = {
            "trainable": gather_full(dict(self.params)),
            "optimizer": self._optimizer_state(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "counters": dict(self.counters),
            "data": self.feed.state(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
            "backend": str(self.accelerator.distributed_type).split(".")[-1],
        }
        if self.ema is not None:
            state["ema"] = gather_full(self.ema.state_dict())
        if self.accelerator.scaler is not None:
            state["scaler"] = self.accelerator.scaler.state_dict()
        return state

    @torch.no_grad()
    def load_state(self, folder: Path) -> None:
        self.step, state = load_checkpoint(folder)
        missing = [name for name in self.params if name not in state["trainable"]]
        if missing:
            raise InputError(f"{folder} holds no weights for {len(missing)} of this model's trainable tensors (e.g. "
                             f"{missing[0]!r}); it was written for another model. A `lora` / `ia3` run made before "
                             f"issue 12 trained one shared adapter: it cannot resume as the per-task method of that "
                             f"name; train it anew as `lora_shared` / `ia3_shared` to keep that variant.")
        check_finite(state["trainable"], folder)  # a checkpoint of a diverged run is refused, naming the tensor
        for name, param in self.params.items():
            param.copy_(shard_like(state["trainable"][name], param))
        self.optimizer.load_state_dict(unshared_optimizer_state(state["optimizer"]))
        reshard_optimizer_state(self.optimizer)
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.counters.update(state["counters"])
        self.feed.load_state(state["data"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
            self.ema.shadow_params = [shard_like(shadow, param) for shadow, param
                                      in zip(self.ema.shadow_params, self.params.values())]
        if self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])

    def _stop_if_weights_nonfinite(self) -> None:
        """Stops the run when a trainable weight or its EMA copy is not finite (checked on every process, agreed
        by all): such weights are never saved. E.g. an infinite learning rate gives a finite loss, then NaN
        weights, then steps skipped as non-finite until the run would end."""
        tensors = dict(self.params)
        if self.ema is not None:
            tensors.update({f"{name} (EMA)": shadow for name, shadow in zip(self.params, self.ema.shadow_params)})
        bad = next((name for name, tensor in tensors.items() if not _all_finite(tensor)), None)
        flags = self.accelerator.reduce(torch.tensor([0.0 if bad is None else 1.0], device=self.device), "sum")
        if flags.item():
            raise NonFiniteRun(f"trainable weight {bad or '(a shard on another process)'!r} is not finite after "
                               f"step {self.step}; nothing was saved. Lower `optim.lr` (it was {self.config.optim.lr}) "
                               f"or check the data.")

    def save(self) -> None:
        self._stop_if_weights_nonfinite()
        state = self.state()  # on every rank: under FSDP, gathering optimizer and model state is collective
        if self.accelerator.is_main_process:
            save_checkpoint(self.run_dir, self.step, state, self.config.keep_checkpoints)
        self.accelerator.wait_for_everyone()

    # -- loop ----------------------------------------------------------------------------------------------------
    def _optimizer_step(self, finite: bool) -> None:
        if finite:
            if self.config.optim.max_grad_norm > 0:
                self.accelerator.clip_grad_norm_(list(self.params.values()), self.config.optim.max_grad_norm)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.step(list(self.params.values()))
            self.counters["nonfinite_in_a_row"] = 0
        else:
            self.counters["nonfinite_skipped"] += 1
            self.counters["nonfinite_in_a_row"] += 1
            if self.counters["nonfinite_in_a_row"] >= self.config.max_nonfinite_steps:
                raise NonFiniteRun(f"the loss was non-finite for {self.counters['nonfinite_in_a_row']} steps in a "
                                   f"row (at step {self.step}); lower `optim.lr` or check the data.")
        self.optimizer.zero_grad(set_to_none=True)
        self.lr_scheduler.step()

    def _train_step(self, batches) -> dict:
        config, accumulate = self.config, self.config.gradient_accumulation_steps
        per_task: dict[str, list[float]] = {}
        finite, total = True, 0.0
        for micro in range(accumulate):
            batch = next(batches)
            sync = nullcontext() if micro == accumulate - 1 else self.accelerator.no_sync(self.model)
            with sync:
                if batch is None:  # every sample of this micro-batch was unreadable: a zero-gradient step
                    loss, losses = sum(p.sum() for p in self.params.values()) * 0.0, {}
                else:
                    loss, losses = micro_step_loss(
                        self.model, batch, parts=self.parts, step=self.step, seed=config.seed,
                        dropout_p=config.conditioning_dropout, task_loss_weights=config.task_loss_weights,
                        encode_text=self.encode_text, weight_dtype=self.weight_dtype,
                        task_channels=self.task_channels, snr_gamma=config.snr_gamma,
                        unconditional=self.unconditional)
                # DeepSpeed's engine divides by its own accumulation count (1, see _configure_deepspeed).
                self.accelerator.backward(loss if self.deepspeed else loss / accumulate)
            self.tasks_seen.update(losses)
            finite &= bool(torch.isfinite(loss))
            total += loss.item() / accumulate
            for task, values in losses.items():
                per_task.setdefault(task, []).extend(values)
        flags = self.accelerator.reduce(torch.tensor([0.0 if finite else 1.0], device=self.accelerator.device), "sum")
        finite = bool(flags.item() == 0)  # on every process
        self._optimizer_step(finite=finite)
        return {"loss": total, "per_task": per_task, "finite": finite}

    def train_step(self) -> dict:
        """One optimizer step on the next batch: the loop's body without logging, checkpoints or validation.
        Returns {"loss": this process's loss, "per_task": {task: sample losses}, "finite": every process's loss
        was finite (else the step was skipped)}."""
        if self._batches is None:
            self._batches = self.feed.batches(self.step, self.device)
            self.model.train()
        record = self._train_step(self._batches)
        self.step += 1
        return record

    def _log(self, record: dict, progress) -> None:
        merged: dict[str, list[float]] = {}
        for part in gather_object([record["per_task"]]):
            for task, values in part.items():
                merged.setdefault(task, []).extend(values)
        values = {"loss": record["loss"], "lr": self.lr_scheduler.get_last_lr()[0],
                  "nonfinite_skipped": self.counters["nonfinite_skipped"],
                  **{f"loss/{task}": float(np.mean(v)) for task, v in merged.items()}}
        if self.config.log_with != "none":
            self.accelerator.log(values, step=self.step)
        progress.set_postfix(loss=f"{record['loss']:.4f}")
        self.history.append({"step": self.step, **values})

    def train(self) -> dict:
        config = self.config
        if self.accelerator.is_main_process:
            self.output.create()
            atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(comparable_config(config) | {"resume": config.resume},
                                                                            sort_keys=False))
        if self.resume_from is not None:
            self.load_state(self.resume_from)
        if config.log_with != "none":
            self.accelerator.init_trackers("mtu", config={"max_steps": config.max_steps, "lr": config.optim.lr})
        progress = tqdm(total=config.max_steps, initial=self.step, disable=not self.accelerator.is_main_process,
                        desc="training")
        record = None
        while self.step < config.max_steps:
            record = self.train_step()
            progress.update(1)
            if self.step % config.log_every == 0 or self.step == config.max_steps:
                self._log(record, progress)
            if config.checkpoint_every and self.step % config.checkpoint_every == 0:
                self.save()
            if config.validate_every and self.step % config.validate_every == 0:
                self.validate()
        progress.close()
        if record is not None and not record["finite"]:  # skipped steps are allowed, but not as the run's end
            raise NonFiniteRun(f"the loss was non-finite at the last step ({self.step}; "
                               f"{self.counters['nonfinite_skipped']} step(s) skipped in all); the run's end was not "
                               f"saved. Lower `optim.lr` (it was {self.config.optim.lr}) or check the data.")
        self.save()
        final = self.export()
        summary = {"steps": self.step, "final": str(final), "history": self.history, **self.counters,
                   "processes": self.accelerator.num_processes,
                   "distributed_type": str(self.accelerator.distributed_type).split(".")[-1],
                   "sharded_parameters": self.sharded,
                   "tasks_seen_per_process": [sorted(seen) for seen in gather_object([self.tasks_seen])],
                   "data_failures": self.feed.failure_summary()}
        if self.accelerator.is_main_process:
            atomic_write_text(self.run_dir / "train_summary.json", json.dumps(summary, indent=2))
        self._release_wrappers()
        self.accelerator.end_training()
        return summary

    def _release_wrappers(self) -> None:
        """Drops the DDP / DeepSpeed wrappers (keeping the bare model) before the process group is destroyed.

        A DDP wrapper that outlives its gloo group is torn down at interpreter exit, and a launched rank has been
        seen to hang there after `train()` returned; freeing it while the group still exists avoids that. The bare
        model, its parameters and the EMA stay usable after training (the toy-world experiment scores them)."""
        self.model = self.accelerator.unwrap_model(self.model)
        self.optimizer = None
        self.accelerator.free_memory()
        gc.collect()
        self.accelerator.wait_for_everyone()

    def validate(self) -> None:
        """Writes each task's validation image strip (main process; under FSDP every rank joins the forwards,
        which gather the shards collectively)."""
        main = self.accelerator.is_main_process
        if main or self.sharded:
            from .validation import validation_examples, write_validation_images

            if not hasattr(self, "validation_set"):
                self.validation_set = validation_examples(self.feed.datasets)
            folder = self.run_dir / "validation" / f"step-{self.step:07d}"
            write_validation_images(self.parts, self.accelerator.unwrap_model(self.model), self.validation_set,
                                    folder, self.config.seed, write=main)
        self.accelerator.wait_for_everyone()

    def export(self) -> Path:
        """Writes the trained weights (EMA weights when EMA is on) to `output_dir/final`."""
        final = self.run_dir / "final"
        model = self.accelerator.unwrap_model(self.model)
        if self.ema is None:
            weights = {name: param.detach() for name, param in self.params.items()}
        else:
            weights = dict(zip(self.params, (shadow.detach() for shadow in self.ema.shadow_params)))
        weights = {name: tensor.cpu().contiguous() for name, tensor in gather_full(weights).items()}  # collective
        if self.accelerator.is_main_process:
            if self.config.model.method == "mtu":
                model.save_pretrained(final, state_dict=weights)
            else:  # trainable.safetensors (every task's adapter and input conv) and method.json, written atomically
                save_baseline(model, final, weights, unconditional_text=self.unconditional)
        self.accelerator.wait_for_everyone()
        return final


def train(config: TrainConfig, *, overwrite: bool = False) -> dict:
    """Runs `config` to `max_steps` (resuming if asked) and returns a summary; `overwrite` lets the run write into
    an output_dir that holds other files (`mtu.outputs.claim_run_folder`)."""
    return Trainer(config, overwrite=overwrite).train()
