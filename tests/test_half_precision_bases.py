"""Half-precision bases, weights variants and single-file checkpoints (issue 14, point 2).

An adapter's base fingerprints are canonical (`mtu.upcycling.bases`): taken of the weights cast to every precision
not finer than their own, and compared at a precision both sides are exact at, else the coarser side's. So an
adapter made from fp16 weights loads on the fp32 base and the other way round, and a base with one weight moved is
still refused. `variant` ("fp16") reaches every place a base is loaded. Every load runs from another directory than
the one the adapter was made in.
"""

import copy
import json
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel

import mtu
from mtu import InputError, MTUConfig
from mtu.cli import main
from mtu.training import ModelConfig, load_train_config
from mtu.training.components import load_base
from mtu.upcycling.bases import base_identity, fingerprint_matches, weights_fingerprint
from mtu.upcycling.serialization import CONFIG_NAME

from .base_folder_parts import nudged_copy, write_base_folders
from .conftest import nudge

TASKS = MTUConfig(tasks=["t2i", "edit"], num_experts=2)


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    folders = write_base_folders(tmp_path_factory.mktemp("base models"))
    folders["nudged"] = nudged_copy(folders["sd"], folders["sd"].parent / "nudged unet")
    folders["elsewhere"] = folders["sd"].parent / "elsewhere"
    folders["elsewhere"].mkdir()
    return folders


def _base_record(adapter: Path) -> dict:
    return json.loads((adapter / CONFIG_NAME).read_text())["base"]


def _error_line(capsys, argv) -> str:
    capsys.readouterr()
    assert main([str(arg) for arg in argv]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("mtu: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---- fingerprints ------------------------------------------------------------------------------------------------

def test_upcycle_dtype_float16_writes_an_adapter_that_loads(bases, tmp_path, monkeypatch):
    monkeypatch.chdir(bases["sd"].parent)
    assert main(["upcycle", "--base", "sd base", "--dtype", "float16", "--tasks", "t2i,edit", "--experts", "2",
                 "--out", str(tmp_path / "adapter")]) == 0
    record = _base_record(tmp_path / "adapter")
    assert record["fingerprint_precisions"] == ["float16"] and set(record["fingerprints"]) == {"float16", "bfloat16"}
    monkeypatch.chdir(bases["elsewhere"])
    loaded = mtu.load_mtu(tmp_path / "adapter")  # on the recorded fp32 base, as stored
    assert loaded.unet.dtype == torch.float32
    assert mtu.load_mtu(tmp_path / "adapter", base=str(bases["fp16"]), variant="fp16") is not None
    with pytest.raises(InputError, match="base weights differ .*compared at float16"):
        mtu.load_mtu(tmp_path / "adapter", base=str(bases["nudged"]))


def test_an_adapter_of_a_unet_loaded_in_float16_loads_in_any_dtype(bases, tmp_path, monkeypatch):
    unet = UNet2DConditionModel.from_pretrained(bases["sd"], subfolder="unet", torch_dtype=torch.float16)
    model = mtu.upcycle(unet, TASKS)
    nudge(model)
    model.save_pretrained(tmp_path / "adapter")
    monkeypatch.chdir(bases["elsewhere"])
    for options in [{}, {"base": str(bases["fp16"]), "variant": "fp16"}]:
        loaded = mtu.load_mtu(tmp_path / "adapter", **options)
        assert torch.equal(loaded.task_embeddings, model.task_embeddings), options
    loaded = mtu.load_mtu(tmp_path / "adapter", torch_dtype=torch.bfloat16)  # checked as stored, then cast
    assert loaded.unet.dtype == torch.bfloat16


def test_a_float32_adapter_loads_on_the_fp16_variant_and_refuses_another_base(bases, tmp_path, monkeypatch):
    mtu.upcycle(mtu.load_base_unet(str(bases["sd"])), TASKS).save_pretrained(tmp_path / "adapter")
    assert _base_record(tmp_path / "adapter")["fingerprint_precisions"] == ["float32"]
    monkeypatch.chdir(bases["elsewhere"])
    fp16 = mtu.load_base_unet(str(bases["fp16"]), variant="fp16")
    assert mtu.load_mtu(tmp_path / "adapter", base=fp16) is not None  # compared at fp16: the same rounding
    for other in [mtu.load_base_unet(str(bases["nudged"])), mtu.load_base_unet(str(bases["nudged"])).half()]:
        with pytest.raises(InputError, match="base weights differ"):
            mtu.load_mtu(tmp_path / "adapter", base=other)


def test_the_comparison_rule(bases):
    unet = mtu.load_base_unet(str(bases["sd"]))
    half, bf16 = copy.deepcopy(unet).half(), copy.deepcopy(unet).bfloat16()
    fp32, fp16 = base_identity(unet), base_identity(half)
    assert fingerprint_matches(fp32, unet) == (True, "float32")
    assert fingerprint_matches(fp32, half) == (True, "float16")
    assert fingerprint_matches(fp32, bf16) == (True, "bfloat16")
    assert fingerprint_matches(fp16, unet) == (True, "float16")  # the fp32 base rounded to the adapter's fp16
    assert fingerprint_matches(fp16, copy.deepcopy(half).float()) == (True, "float16")  # fp16 values held in fp32
    # fp16 against bf16 weights: compared at bf16, where the two roundings of one fp32 base disagree (documented)
    assert fingerprint_matches(fp16, bf16) == (False, "bfloat16")


def test_an_adapter_with_the_old_single_fingerprint_still_loads(bases, tmp_path, monkeypatch):
    """Before issue 14 an adapter held one "sha256:..." of the weights in the dtype they had; it still loads, on
    the base in that dtype or any other that rounds to it (the old fp16 adapters now load on their fp32 base)."""
    for dtype in (torch.float32, torch.float16):
        unet = mtu.load_base_unet(str(bases["sd"]), torch_dtype=dtype)
        old = weights_fingerprint(unet)
        folder = tmp_path / str(dtype)
        mtu.upcycle(unet, TASKS, fingerprint=old).save_pretrained(folder)
        assert set(_base_record(folder)) == {"name_or_path", "fingerprint", "unet_config"}
        monkeypatch.chdir(bases["elsewhere"])
        assert mtu.load_mtu(folder) is not None
        with pytest.raises(InputError, match="base weights differ"):
            mtu.load_mtu(folder, base=str(bases["nudged"]))
    assert mtu.load_mtu("toyworld") is not None  # the shipped adapter, written with the old form


# ---- variant -----------------------------------------------------------------------------------------------------

def test_a_variant_only_folder_without_variant_names_the_unet_folder_and_the_flag(bases, tmp_path, capsys):
    line = _error_line(capsys, ["upcycle", "--base", bases["fp16"], "--out", tmp_path / "adapter"])
    assert f"'{bases['fp16'].resolve() / 'unet'}'" in line and "--variant fp16" in line, line
    with pytest.raises(InputError, match="variant='fp16'"):
        mtu.load_base_unet(str(bases["fp16"]))
    with pytest.raises(InputError, match="`variant` 'bf16': .*unet' has no 'bf16' weights; it holds 'fp16' weights"):
        mtu.load_base_unet(str(bases["fp16"]), variant="bf16")
    assert not (tmp_path / "adapter").exists()


def test_upcycle_records_the_variant_and_fold_reads_it(bases, tmp_path, monkeypatch):
    monkeypatch.chdir(bases["fp16"].parent)
    assert main(["upcycle", "--base", "fp16 only", "--variant", "fp16", "--tasks", "t2i,edit", "--experts", "2",
                 "--out", str(tmp_path / "adapter")]) == 0
    record = _base_record(tmp_path / "adapter")
    assert (record["name_or_path"], record["variant"]) == (str(bases["fp16"].resolve()), "fp16")
    monkeypatch.chdir(bases["elsewhere"])
    assert main(["fold", str(tmp_path / "adapter"), "--task", "edit", "--out", str(tmp_path / "folded")]) == 0
    folded = UNet2DConditionModel.from_pretrained(tmp_path / "folded")
    assert folded.config.in_channels == 8
    # the same adapter on the fp32 folder it was rounded from
    assert main(["fold", str(tmp_path / "adapter"), "--task", "t2i", "--out", str(tmp_path / "folded32"),
                 "--base", str(bases["sd"])]) == 0


def test_the_run_config_takes_a_variant_and_training_loads_with_it(bases, tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text(json.dumps({"model": {"base": str(bases["fp16"]), "variant": "fp16"},
                               "data": [{"task": "t2i", "format": "toyworld", "resolution": 32, "count": 8}]}))
    assert load_train_config(run).model.variant == "fp16"
    with pytest.raises(InputError, match=r"^model.variant: must be a weights variant such as 'fp16', or null, got 16"):
        load_train_config(run, ["--model.variant", "16"])
    assert ModelConfig(base="b").variant is None
    parts, unet = load_base(str(bases["fp16"]), variant="fp16")
    assert parts.vae is not None and unet.config.in_channels == 4
    with pytest.raises(InputError, match="--variant fp16"):
        load_base(str(bases["fp16"]))


# ---- single-file checkpoints -------------------------------------------------------------------------------------
# diffusers 0.42 has no converter from its layout to the original (LDM) one, so no tiny original-layout file can be
# made here: the file below holds a UNet in diffusers' layout, which `from_single_file` loads without converting.
# What is checked: the arguments, the config folder, diffusers' `from_single_file` path, recording and reloading.
# What is not: the LDM key conversion of a whole-model file (diffusers' own code).

def test_a_single_file_base_upcycles_and_reloads_without_its_config(bases, tmp_path, monkeypatch):
    monkeypatch.chdir(bases["sd"].parent)
    assert main(["upcycle", "--base", "unet.safetensors", "--base-config", "sd base", "--tasks", "t2i,edit",
                 "--experts", "2", "--out", str(tmp_path / "adapter")]) == 0
    assert _base_record(tmp_path / "adapter")["name_or_path"] == str(bases["single_file"].resolve())
    monkeypatch.chdir(bases["elsewhere"])
    loaded = mtu.load_mtu(tmp_path / "adapter")  # the architecture comes from the adapter's record
    reference = mtu.load_base_unet(str(bases["sd"]))
    assert torch.equal(loaded.unet.mid_block.resnets[0].conv1.weight, reference.mid_block.resnets[0].conv1.weight)
    assert mtu.load_mtu(tmp_path / "adapter", base=str(bases["sd"])) is not None  # same weights, other form


def test_single_file_argument_checks(bases, tmp_path, capsys):
    line = _error_line(capsys, ["upcycle", "--base", bases["single_file"], "--out", tmp_path / "adapter"])
    assert "single-file checkpoint" in line and "--base-config" in line, line
    line = _error_line(capsys, ["upcycle", "--base", bases["single_file"], "--base_config", tmp_path,
                                "--out", tmp_path / "adapter"])
    assert "`single_file_config`" in line and "unet/config.json" in line, line
    line = _error_line(capsys, ["upcycle", "--base", bases["sd"], "--base-config", bases["sd"],
                                "--out", tmp_path / "adapter"])
    assert "only for a single-file" in line, line
    line = _error_line(capsys, ["upcycle", "--base", bases["single_file"], "--base-config", bases["sd"],
                                "--variant", "fp16", "--out", tmp_path / "adapter"])
    assert "`variant` 'fp16' does not apply" in line, line
    (tmp_path / "model.ckpt").write_bytes(b"\x80\x04 not unpickled")
    line = _error_line(capsys, ["upcycle", "--base", tmp_path / "model.ckpt", "--out", tmp_path / "adapter"])
    assert "pickle" in line, line
    assert not (tmp_path / "adapter").exists()
