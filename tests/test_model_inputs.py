"""Bad models and checkpoints a user may hand over (issue 13.7-8): each is refused with one `InputError` line naming
the file and what is wrong, before the base is loaded, and a pickle is never unpickled."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

import mtu
from mtu import MTUConfig
from mtu.architectures import build_unet
from mtu.cli import main
from mtu.errors import InputError
from mtu.upcycling import serialization
from mtu.upcycling.serialization import CONFIG_NAME, WEIGHTS_NAME

from .conftest import nudge


@pytest.fixture
def adapter(base, tmp_path):
    """A nudged N=4 adapter over the tiny base (recorded as random:tiny:0)."""
    model = mtu.upcycle(base, MTUConfig(tasks=["t2i", "edit"]))
    nudge(model)
    model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


@pytest.fixture
def no_base_loading(monkeypatch):
    """Fails the test if the base UNet is loaded: every refusal below must come before that heavy step."""

    def refuse(*args, **kwargs):
        raise AssertionError("the base was loaded before the adapter's own files were checked")

    monkeypatch.setattr(serialization, "load_base_unet", refuse)


@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a file was unpickled")

    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)


def _edit_record(directory, change) -> None:
    record = json.loads((directory / CONFIG_NAME).read_text())
    change(record)
    (directory / CONFIG_NAME).write_text(json.dumps(record))


def _cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("mtu: error:")]
    assert "Traceback" not in err and (code == 0 or len(lines) == 1), err
    return code, lines[0] if lines else ""


def test_a_truncated_adapter_is_refused_naming_the_file(adapter, no_base_loading):
    path = adapter / WEIGHTS_NAME
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match=f"{path}.* is corrupt or truncated"):
        mtu.load_mtu(adapter)


@pytest.mark.parametrize("offer", ["bin file as adapter", "bin in the folder", "zip in safetensors' place",
                                   "pickle in safetensors' place"])
def test_a_pickle_offered_as_weights_is_refused_unread(adapter, tmp_path, no_base_loading, no_unpickling, offer):
    tensors = load_file(str(adapter / WEIGHTS_NAME))
    weights = adapter / WEIGHTS_NAME
    if offer == "bin file as adapter":
        target = tmp_path / "adapter.bin"
        target.write_bytes(pickle.dumps(tensors, protocol=4))
        given, named = target, target
    elif offer == "bin in the folder":
        weights.unlink()
        (adapter / "mtu_model.bin").write_bytes(pickle.dumps(tensors, protocol=2))
        given, named = adapter, adapter / "mtu_model.bin"
    else:
        weights.write_bytes(b"PK\x03\x04" + b"\0" * 64 if offer.startswith("zip") else pickle.dumps(tensors, 3))
        given, named = adapter, weights
    with pytest.raises(InputError, match=f"{named} is a pickle file .*never unpickles"):
        mtu.load_mtu(given)


def test_a_base_folder_with_pickled_weights_only_is_refused(tiny_base, tmp_path, no_unpickling):
    folder = tmp_path / "unet"
    tiny_base.save_pretrained(folder, safe_serialization=True)
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(InputError, match="diffusion_pytorch_model.bin is a pickle file"):
        mtu.load_base_unet(str(folder))


def test_an_adapter_of_another_base_is_refused_naming_it(adapter):
    other = build_unet("tiny", seed=0, block_out_channels=[32, 48])
    with pytest.raises(InputError, match=f"{adapter}: the adapter was made for another base architecture "
                                         r"\(block_out_channels: adapter \[32, 64\] vs base \[32, 48\]\)"):
        mtu.load_mtu(adapter, base=other)
    with pytest.raises(InputError, match=f"{adapter / WEIGHTS_NAME}: tensor 'unet.*' has shape .*the model expects"):
        mtu.load_mtu(adapter, base=build_unet("tiny", seed=0, block_out_channels=[32, 48]), allow_base_mismatch=True)


def test_a_config_that_contradicts_its_weights_is_refused(adapter, capsys, no_base_loading):
    _edit_record(adapter, lambda record: record["config"].update(num_experts=8))  # N=8 over N=4 weights
    message = (f"{adapter / WEIGHTS_NAME}: tensor '.*' has shape .*, but the config \\({CONFIG_NAME}: N=8, G=0.25\\) "
               f"makes it .*do not belong together")
    with pytest.raises(InputError, match=message):
        mtu.load_mtu(adapter)
    code, line = _cli(capsys, "inspect", str(adapter))  # reported N=8 before
    assert code == 2 and "N=8" in line and "do not belong together" in line


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_adapter_weights_are_refused_naming_the_tensor(adapter, no_base_loading, value):
    tensors = load_file(str(adapter / WEIGHTS_NAME))
    name = sorted(tensors)[3]
    tensors[name].view(-1)[0] = value
    save_file(tensors, str(adapter / WEIGHTS_NAME))
    with pytest.raises(InputError, match=f"tensor '{name}' holds 1 NaN or infinite value"):
        mtu.load_mtu(adapter)


def test_an_adapter_config_without_its_base_record_is_one_clear_line(adapter, capsys):
    _edit_record(adapter, lambda record: record.pop("base"))
    code, line = _cli(capsys, "inspect", str(adapter))
    assert code == 2 and f"{adapter / CONFIG_NAME} has no \"base\" record" in line  # was `mtu: error: base`
    with pytest.raises(InputError, match="has no \"base\" record"):
        mtu.load_mtu(adapter)


def test_a_task_record_with_unknown_fields_is_refused(adapter):
    _edit_record(adapter, lambda record: record["tasks"]["edit"].update(colour="red"))
    with pytest.raises(InputError, match=f"{adapter / CONFIG_NAME}: task 'edit' is recorded as"):
        mtu.load_mtu(adapter)


@pytest.mark.parametrize("out", ["same", "parent"])
def test_fold_refuses_an_output_that_is_or_holds_its_input(adapter, capsys, out):
    before = {path.name: path.read_bytes() for path in adapter.iterdir()}
    target = adapter if out == "same" else adapter.parent
    code, line = _cli(capsys, "fold", str(adapter), "--task", "edit", "--out", str(target), "--overwrite")
    assert code == 2 and "--out" in line and "input adapter" in line
    assert {path.name: path.read_bytes() for path in adapter.iterdir()} == before


def test_fold_checks_the_task_and_foldability_before_loading(base, tmp_path, capsys, monkeypatch):
    import mtu.upcycling

    mtu.upcycle(base, MTUConfig(tasks=["t2i", "edit"], num_experts=4, granularity=0.5)).save_pretrained(tmp_path / "a")
    monkeypatch.setattr(mtu.upcycling, "load_mtu", lambda *a, **k: pytest.fail("loaded before the checks"))
    code, line = _cli(capsys, "fold", str(tmp_path / "a"), "--task", "sr", "--out", str(tmp_path / "f"))
    assert code == 2 and "--task: unknown task 'sr'" in line
    code, line = _cli(capsys, "fold", str(tmp_path / "a"), "--task", "edit", "--out", str(tmp_path / "f"))
    assert code == 2 and "cannot be folded: 4 active experts x G=0.5" in line
    assert not (tmp_path / "f").exists()


def test_upcycle_refuses_writing_over_its_base(tmp_path, tiny_base, capsys):
    folder = tmp_path / "unet"
    tiny_base.save_pretrained(folder, safe_serialization=True)
    before = sorted(path.name for path in folder.iterdir())
    code, line = _cli(capsys, "upcycle", "--base", str(folder), "--out", str(folder), "--overwrite")
    assert code == 2 and "base (`--base`)" in line
    assert sorted(path.name for path in folder.iterdir()) == before


def test_a_damaged_training_checkpoint_is_refused_naming_it(tmp_path):
    from mtu.training.checkpoint import load_checkpoint, save_checkpoint

    folder = save_checkpoint(tmp_path, 3, {"trainable": {"w": torch.ones(64, 64)}}, keep=1)
    tensors = folder / "state.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:200])
    with pytest.raises(InputError, match=f"{tensors} is corrupt or truncated"):
        load_checkpoint(folder)
    (folder / "state.json").write_text("{")
    with pytest.raises(InputError, match="state.json is not valid JSON"):
        load_checkpoint(folder)


def _baseline(tmp_path):
    from mtu.training.config import ModelConfig
    from mtu.training.methods import build_model, save_baseline

    model = build_model(build_unet("tiny"), ModelConfig(base="random:tiny", method="lora", lora_rank=4), ["t2i", "edit"])
    return save_baseline(model, tmp_path / "baseline")


@pytest.mark.parametrize("damage", ["nan", "pickle", "other rank"])
def test_a_damaged_baseline_folder_is_refused(tmp_path, monkeypatch, no_unpickling, damage):
    import mtu.upcycling
    from mtu.training.methods import load_baseline

    folder = _baseline(tmp_path)
    weights = folder / "trainable.safetensors"
    tensors = load_file(str(weights))
    if damage == "nan":
        name = sorted(tensors)[-1]
        tensors[name].view(-1)[0] = float("nan")
        save_file(tensors, str(weights))
        message = f"{weights}: tensor '{name}' holds 1 NaN"
    elif damage == "pickle":
        weights.unlink()
        (folder / "trainable.bin").write_bytes(pickle.dumps(tensors, protocol=4))
        message = "trainable.bin is a pickle file"
    else:  # method.json says rank 2 over rank-4 weights
        record = json.loads((folder / "method.json").read_text())
        record["model"]["lora_rank"] = 2
        (folder / "method.json").write_text(json.dumps(record))
        message = f"{weights}: tensor '.*lora_A.*' has shape \\(4, .*expects \\(2, "
    if damage != "other rank":  # refused before the base is loaded
        monkeypatch.setattr(mtu.upcycling, "load_base_unet", lambda *a, **k: pytest.fail("base loaded first"))
    with pytest.raises(InputError, match=message):
        load_baseline(folder)


def test_upcycle_replaces_only_its_own_earlier_output(adapter, tmp_path, capsys):
    # `adapter` stands for a trained adapter (train's final/ looks the same): a fresh upcycle must not replace it.
    before = {path.name: path.read_bytes() for path in adapter.iterdir()}
    code, line = _cli(capsys, "upcycle", "--base", "random:tiny", "--tasks", "t2i,edit", "--out", str(adapter))
    assert code == 2 and "already holds files that are not an earlier `mtu upcycle` output" in line
    assert {path.name: path.read_bytes() for path in adapter.iterdir()} == before
    for _ in range(2):  # its own output is replaced without --overwrite
        code, _ = _cli(capsys, "upcycle", "--base", "random:tiny", "--tasks", "t2i", "--out", str(tmp_path / "up"))
        assert code == 0
    assert mtu.load_mtu(tmp_path / "up").task_names == ["t2i"]
