"""Adapter save/load: only MTU tensors, bit-exact restore, refusal of another base, clear errors on bad files."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import mtu
from mtu import MTUConfig
from mtu.architectures import build_unet
from mtu.upcycling.serialization import CONFIG_NAME, WEIGHTS_NAME

from .conftest import nudge, tiny_inputs


@pytest.fixture
def saved(base, tmp_path):
    model = mtu.upcycle(base, MTUConfig(top_k=3)).eval()
    nudge(model)
    model.save_pretrained(tmp_path / "adapter")
    return model, tmp_path / "adapter"


def test_adapter_holds_only_mtu_tensors(saved):
    model, directory = saved
    with safe_open(str(directory / WEIGHTS_NAME), framework="pt") as handle:
        names = set(handle.keys())
    assert names == {name for name, _ in model.mtu_named_parameters()}
    assert not any("attn" in name for name in names)
    record = json.loads((directory / CONFIG_NAME).read_text())
    assert record["base"]["name_or_path"] == "random:tiny:0"
    assert record["base"]["fingerprint"].startswith("sha256:")
    assert record["config"]["top_k"] == 3


def test_save_load_is_bit_exact(saved):
    model, directory = saved
    loaded = mtu.load_mtu(directory).eval()  # base rebuilt from the recorded random:tiny:0
    for (name, expected), (_, actual) in zip(model.mtu_named_parameters(), loaded.mtu_named_parameters()):
        assert torch.equal(actual, expected), name
    inputs = tiny_inputs(channels=8)
    with torch.no_grad():
        assert torch.equal(loaded(**inputs, task="edit").sample, model(**inputs, task="edit").sample)


def test_load_onto_a_given_base_object(saved):
    model, directory = saved
    loaded = mtu.load_mtu(directory, base=build_unet("tiny", seed=0))
    assert torch.equal(loaded.task_embeddings, model.task_embeddings)


def test_base_with_other_weights_is_refused(saved):
    _, directory = saved
    with pytest.raises(ValueError, match="base weights differ .*allow_base_mismatch=True"):
        mtu.load_mtu(directory, base=build_unet("tiny", seed=1))
    assert mtu.load_mtu(directory, base=build_unet("tiny", seed=1), allow_base_mismatch=True) is not None


def test_base_of_another_architecture_is_refused(saved):
    _, directory = saved
    other = build_unet("tiny", seed=0, cross_attention_dim=48)
    with pytest.raises(ValueError, match="another base architecture .*cross_attention_dim: adapter 32 vs base 48"):
        mtu.load_mtu(directory, base=other)


def test_truncated_weights_give_a_clear_error(saved):
    _, directory = saved
    path = directory / WEIGHTS_NAME
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        mtu.load_mtu(directory)


@pytest.mark.parametrize("garbage", [b"", b"\x00" * 7, b"not a safetensors file at all" * 10])
def test_corrupt_weights_give_a_clear_error(saved, garbage):
    _, directory = saved
    (directory / WEIGHTS_NAME).write_bytes(garbage)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        mtu.load_mtu(directory)


def test_corrupt_config_gives_a_clear_error(saved):
    _, directory = saved
    (directory / CONFIG_NAME).write_text('{"format": "mtu-adap')
    with pytest.raises(ValueError, match="not valid JSON"):
        mtu.load_mtu(directory)


def test_missing_adapter_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no MTU adapter in"):
        mtu.load_mtu(tmp_path / "nothing")


def test_adapter_for_other_tensor_shapes_is_refused(saved, tmp_path):
    """Config and weights that do not belong together (e.g. a hand-edited config) fail naming a tensor."""
    _, directory = saved
    record = json.loads((directory / CONFIG_NAME).read_text())
    record["config"]["router_hidden_size"] = 16
    (directory / CONFIG_NAME).write_text(json.dumps(record))
    with pytest.raises(ValueError, match="router.hidden.weight' has shape"):
        mtu.load_mtu(directory)


def test_saving_leaves_no_staging_files(saved):
    _, directory = saved
    assert sorted(p.name for p in Path(directory).iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]


def test_custom_task_travels_with_the_adapter(base, tmp_path):
    from mtu.upcycling import tasks as registry

    mtu.register_task(mtu.TaskSpec("relight", image_inputs=("image",)))
    model = mtu.upcycle(base, MTUConfig(tasks=["t2i", "relight"]))
    model.save_pretrained(tmp_path / "a")
    del registry._REGISTRY["relight"]  # a fresh process that never registered it
    assert mtu.load_mtu(tmp_path / "a").task_names == ["t2i", "relight"]


def test_load_in_another_dtype(saved):
    """The fingerprint is checked on the base as stored; the model is cast afterwards."""
    model, directory = saved
    loaded = mtu.load_mtu(directory, torch_dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16 and loaded.device.type == "cpu"
    assert torch.equal(loaded.task_embeddings, model.task_embeddings.to(torch.bfloat16))


def test_save_with_given_tensors_writes_those(saved, tmp_path):
    """`state_dict` (EMA weights, tensors gathered from FSDP shards) replaces the model's own; wrong names refused."""
    model, _ = saved
    given = {name: torch.full_like(param, 0.25) for name, param in model.mtu_named_parameters()}
    model.save_pretrained(tmp_path / "given", state_dict=given)
    with safe_open(str(tmp_path / "given" / WEIGHTS_NAME), framework="pt") as handle:
        assert all(torch.equal(handle.get_tensor(name), given[name]) for name in given)
    assert not all(torch.equal(param, given[name]) for name, param in model.mtu_named_parameters())
    given.pop("task_embeddings")
    with pytest.raises(ValueError, match="missing \\['task_embeddings'\\]"):
        model.save_pretrained(tmp_path / "wrong", state_dict=given)
    assert not (tmp_path / "wrong").exists()
