"""Sampling pipelines for MTU models: every task in one diffusers pipeline, and the `mtu generate` entry point.

Where things are: `defaults.py` (per-task sampling defaults, Appendix A.2), `checks.py` (argument validation),
`inputs.py` (images and masks), `common.py` (the shared sampling loop and guidance; `from_base`, `from_pretrained`,
`save_pretrained`), `folders.py` (what a base folder holds and the folder `save_pretrained` writes),
`pipeline_mtu.py` (SD 1.x/2.x, with the base's safety checker), `pipeline_mtu_sdxl.py` (SDXL), `generate.py` (one
image from any trained model folder, for the CLI).
Names are imported on first use, so `mtu.pipelines.generate` loads quickly for the command line. The function
`generate` is `mtu.pipelines.generate.generate` (the package attribute `generate` is its module).
"""

from importlib import import_module

_EXPORTS = {
    "MTUPipeline": "pipeline_mtu",
    "MTUStableDiffusionXLPipeline": "pipeline_mtu_sdxl",
    "SavedMTUModel": "folders",  # named by the unet/mtu_unet.py of every folder `save_pretrained` writes
    "ImageResizedWarning": "checks",
    "SafetyCheckerDisabledWarning": "pipeline_mtu",
    "TASK_DEFAULTS": "defaults",
    "TaskDefaults": "defaults",
    "guidance_kind": "defaults",
    "task_defaults": "defaults",
    "add_generate_arguments": "generate",
    "run_generate": "generate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
