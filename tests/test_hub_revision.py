"""Issue 14: an adapter of a hub base records the commit it was made from (`org/name@<sha>`), and loads that commit
later even after the repository's `main` moved on. The hub is unreachable here, so the test builds a Hugging Face
cache by hand (refs/ and snapshots/, the layout huggingface_hub reads) and runs offline (HF_HUB_OFFLINE=1) in a
subprocess, where HF_HUB_CACHE points at it (huggingface_hub reads both when imported)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from mtu.upcycling.bases import base_location, split_revision

from .base_folder_parts import sd_pipeline

REPO = "mtu-test/tiny-sd"
SHA1, SHA2 = "1" * 40, "2" * 40


def add_snapshot(cache: Path, sha: str, pipe: StableDiffusionPipeline, refs: tuple[str, ...]) -> None:
    repo = cache / f"models--{REPO.replace('/', '--')}"
    pipe.save_pretrained(repo / "snapshots" / sha, safe_serialization=True)
    for ref in refs:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(sha)


def run_offline(cache: Path, cwd: Path, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_HOME": str(cache.parent / "home")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_split_revision_only_for_hub_ids(tmp_path):
    assert split_revision("org/name@v1.0") == ("org/name", "v1.0")
    assert split_revision("org/name") == ("org/name", None)
    assert split_revision("/abs/folder@x") == ("/abs/folder@x", None)  # a path, never a revision
    assert base_location("org/name@" + SHA1) == "org/name@" + SHA1  # a commit is recorded as given
    assert base_location(str(tmp_path)) == str(tmp_path.resolve())


def test_an_adapter_of_a_hub_base_pins_the_commit_it_was_made_from(tmp_path):
    """Before: the adapter recorded 'mtu-test/tiny-sd' and, once main moved, refused its base (fingerprints differ)
    with no way back to the weights it was made from."""
    cache = tmp_path / "hub cache"
    pipe = sd_pipeline(tmp_path)
    add_snapshot(cache, SHA1, pipe, refs=("main", "v1"))
    result = run_offline(cache, tmp_path, f"""
        from mtu.cli import main
        assert main(["upcycle", "--base", "{REPO}", "--tasks", "t2i,edit", "--out", "from-main"]) == 0
        assert main(["upcycle", "--base", "{REPO}@v1", "--tasks", "t2i,edit", "--out", "from-tag"]) == 0
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    for out in ("from-main", "from-tag"):
        record = json.loads((tmp_path / out / "mtu_config.json").read_text())
        assert record["base"]["name_or_path"] == f"{REPO}@{SHA1}", (out, record["base"]["name_or_path"])

    with torch.no_grad():  # main moves on: new weights at a new commit
        pipe.unet.conv_in.weight.view(-1)[0] += 0.5
    add_snapshot(cache, SHA2, pipe, refs=("main",))
    result = run_offline(cache, tmp_path, f"""
        from mtu import load_mtu
        from mtu.pipelines import MTUPipeline
        from mtu.training.components import load_frozen_parts
        pipe = MTUPipeline.from_pretrained("from-main")  # the recorded base, at the recorded commit
        image = pipe(task="t2i", prompt="a red circle", num_inference_steps=2, output_type="np").images[0]
        print("OK", image.shape)
        assert load_frozen_parts("{REPO}@{SHA1}").vae is not None
        try:
            load_mtu("from-main", base="{REPO}")  # today's main: another base
        except Exception as error:
            print("REFUSED", type(error).__name__, error)
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK (" in result.stdout and "REFUSED" in result.stdout and "fingerprints differ" in result.stdout, \
        result.stdout
