"""Serving and exporting MTU tasks: switch tasks in place (`TaskSwitchingUNet`), and write one task as a stock
diffusers pipeline or as ONNX models that run in onnxruntime (`export_task`, what `mtu export` runs).

Where things are: `switching.py` (one stock UNet serving every task), `diffusers_export.py` (a task as a stock
diffusers pipeline folder), `onnx_export.py` (a stock UNet, text encoder or VAE as an ONNX model),
`onnx_pipeline.py` (a task's ONNX folder, and `OnnxTaskPipeline`, its sampling loop in onnxruntime),
`task_export.py` (`export_task`: the checks, then either format, written atomically).
The ONNX parts need the `export` extra (`pip install "mtu-diffusion[export]"`); names other than
`TaskSwitchingUNet` are imported on first use.
"""

from importlib import import_module

from .switching import TaskSwitchingUNet

_EXPORTS = {
    "OnnxTaskPipeline": "onnx_pipeline",
    "write_onnx_pipeline": "onnx_pipeline",
    "write_diffusers_pipeline": "diffusers_export",
    "export_task": "task_export",
    "require_onnx": "onnx_export",
    "MissingExtraError": "onnx_export",
}

__all__ = ["MissingExtraError", "OnnxTaskPipeline", "TaskSwitchingUNet", "export_task", "require_onnx",
           "write_diffusers_pipeline", "write_onnx_pipeline"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
