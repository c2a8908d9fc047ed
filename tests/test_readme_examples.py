"""The README's Python example runs as written (issue 14.8: its `model(latents, t, text_embeddings, task="edit")`
failed with 4-channel latents), on a tiny pipeline folder in place of "path/to/sd15", from another folder."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_block(heading: str) -> str:
    """The first ```python block after the line `heading`."""
    text = README.read_text()
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_use_it_example_runs(tmp_path, monkeypatch):
    from .training_parts import tiny_pipeline_folder

    base = tiny_pipeline_folder(tmp_path / "models")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code = _python_block("## Use it")
    assert '"path/to/sd15"' in code
    scope: dict = {}
    exec(compile(code.replace('"path/to/sd15"', repr(str(base))), "README.md", "exec"), scope)
    assert scope["eps"].shape == scope["latents"].shape
    assert (work / "my-adapter" / "mtu_config.json").is_file()
    assert isinstance(scope["edit_unet"], torch.nn.Module) and scope["edit_unet"].config.in_channels == 8
