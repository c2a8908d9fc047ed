"""`export_task`: one task of an MTU model written as a stock diffusers pipeline or as ONNX; what `mtu export` runs.

    mtu export toyworld --task edit --format onnx --out toyworld-edit-onnx
    mtu export my-adapter --task t2i --format diffusers --dtype fp16 --out t2i-pipeline

Every check that needs no weights runs first (the model folder, the task, the format, whether the task folds, the
output folder); the folder is written into a staging folder and moved into place only when complete
(`mtu.outputs.claim_output`), so a failed export leaves nothing behind.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..progress import step

FORMATS = ("diffusers", "onnx")
DTYPES = ("fp32", "fp16")


def _check_options(format: str, dtype: str) -> None:
    if format not in FORMATS:
        raise InputError(f"`format` must be one of {FORMATS}, got {format!r}.", field="--format")
    if dtype not in DTYPES:
        raise InputError(f"`dtype` must be one of {DTYPES}, got {dtype!r}.", field="--dtype")


def _check_source(source, task: str, format: str) -> None:
    """The task exists, and the model's tasks fold into a stock UNet (what both formats hold)."""
    from ..upcycling.serialization import read_adapter_config

    if source.kind == "baseline":
        raise InputError(f"{str(source.folder)!r} is a trained baseline (full fine-tuning, LoRA or IA3), whose "
                         f"tasks do not fold into a stock UNet; `mtu export` takes MTU models.")
    names = [spec.name for spec in source.specs]
    if task not in names:
        raise InputError(f"unknown task {task!r}; the model has tasks {names}.", field="--task")
    if format == "onnx" and source.family == "sdxl":
        raise InputError("the onnx format takes SD 1.x/2.x tasks only (SDXL's two text encoders and added "
                         "conditions have no ONNX sampling loop here); use --format diffusers.", field="--format")
    if source.kind in ("adapter", "pipeline"):
        config = read_adapter_config(source.folder / "unet" if source.kind == "pipeline" else source.folder)["config"]
        active = config.top_k or config.num_experts
        if active * config.granularity > 1 + 1e-9:
            raise InputError(f"the {format} format holds a task folded into a stock UNet, and this model's {active} "
                             f"active experts x G={config.granularity:g} are wider than the base FFN (top_k x G "
                             f"must be <= 1).", field="--format")


def _load_pipeline(source):
    """The MTU pipeline of `source` (a `mtu.pipelines.generate.ModelSource`), in float32 on the CPU."""
    from ..pipelines.generate import load_pipeline
    from .switching import check_foldable

    def foldable(model) -> None:
        if getattr(model, "mtu_config", None) is None:
            raise InputError(f"{str(source.folder)!r} is a checkpoint of a baseline run, whose tasks do not fold "
                             f"into a stock UNet; `mtu export` takes MTU models.")
        check_foldable(model, "`mtu export`")

    return load_pipeline(source, check_model=foldable)


def export_task(model, task: str, format: str, out, *, dtype: str = "fp32", overwrite: bool = False,
                base=None, variant: str | None = None) -> tuple[Path, dict]:
    """Writes `task` of `model` into the folder `out` as `format`; returns (the folder, its record).

    Args:
        model: An MTU adapter folder, a pipeline folder (`MTUPipeline.save_pretrained`), a run folder or
            training checkpoint of an MTU run, or a shipped adapter's short name ("toyworld").
        task: One of the model's tasks.
        format: "diffusers" (the task's stock diffusers pipeline; `diffusers_export`) or "onnx" (its text
            encoder, UNet and VAE as ONNX models, which `OnnxTaskPipeline` samples in onnxruntime; SD 1.x/2.x).
        out: The folder to write: new, empty, or an earlier `mtu export` output; another one only with
            `overwrite` (then only the files the export writes are replaced).
        dtype: "fp32" or "fp16" weights (in fp16 a VAE that asks for it, `force_upcast`, stays fp32 in ONNX).
        base: The base pipeline to use instead of the one the model records.
        variant: The base's weights variant to read ("fp16"); default the one the model records.
    """
    from ..outputs import claim_output
    from ..pipelines.generate import read_model_source

    _check_options(format, dtype)
    source = read_model_source(model, base, variant)
    _check_source(source, task, format)
    if format == "onnx":
        from .onnx_export import require_onnx

        require_onnx()
    output = claim_output(out, command="export", overwrite=overwrite,
                          inputs={"model (`DIR`)": source.folder, "base (`--base`)": source.base})
    with step(f"loading the MTU pipeline from {model}"):
        pipe = _load_pipeline(source)
    if format == "onnx":
        from .onnx_pipeline import write_onnx_pipeline as writer
    else:
        from .diffusers_export import write_diffusers_pipeline as writer
    records = []
    with step(f"writing task {task!r} as {format} ({dtype}) to {out}"):
        folder = output.write(lambda staging: records.append(writer(pipe, task, staging, dtype)))
    return folder, records[0]
