"""Table 1's experiment (issue 12.5): a `full` fine-tune restricted to the FFNs, the self-attention or the
cross-attention of every transformer block (`model.trainable`), the task input convs always trained."""

import copy

import pytest

from mtu.errors import InputError
from mtu.training import config_from_dict, train
from mtu.training.config import ModelConfig
from mtu.training.methods import build_model, load_baseline, trainable_parameters
from mtu.upcycling import load_base_unet

from .training_parts import tiny_run_config

PART_OF = {"ffn": ".ff.", "self_attn": ".attn1.", "cross_attn": ".attn2."}


@pytest.fixture(scope="module")
def tiny_unet():
    return load_base_unet("random:tiny")


@pytest.mark.parametrize("parts", [["ffn"], ["self_attn"], ["cross_attn"], ["self_attn", "cross_attn"]])
def test_only_the_named_parts_and_the_input_convs_train(tiny_unet, parts):
    model = build_model(copy.deepcopy(tiny_unet), ModelConfig(base="random:tiny", method="full", trainable=parts),
                        ["t2i", "edit"])
    names = set(trainable_parameters(model))
    assert names and all(name.startswith("unet.conv_in.") or any(PART_OF[p] in name for p in parts)
                         for name in names)
    for part in parts:  # every block's part is there
        assert sum(PART_OF[part] in name and name.endswith("weight") for name in names) >= 4
    assert any(name.startswith("unet.conv_in.convs.edit") for name in names)
    frozen = [name for name, param in model.named_parameters() if not param.requires_grad]
    assert any(".ff." in name for name in frozen) == ("ffn" not in parts)


def test_a_restricted_run_trains_saves_and_reloads(tmp_path):
    config = tiny_run_config(tmp_path, model={"method": "full", "trainable": ["ffn"]}, max_steps=2,
                             checkpoint_every=0)
    train(config_from_dict(config))
    final = tmp_path / "run" / "final"
    base = load_base_unet(config["model"]["base"])
    loaded = load_baseline(final)
    moved = {name: (param - dict(base.named_parameters())[name.removeprefix("unet.")]).abs().max().item()
             for name, param in loaded.named_parameters() if not name.startswith("unet.conv_in")}
    assert max(value for name, value in moved.items() if ".ff." in name) > 0  # the FFNs trained
    assert max(value for name, value in moved.items() if ".ff." not in name) == 0  # nothing else moved
    assert loaded.baseline_config.trainable == ["ffn"]


@pytest.mark.parametrize("model, message", [
    ({"method": "full", "trainable": ["mlp"]}, r"^trainable: must be a non-empty list of \('ffn', 'self_attn', "
                                              r"'cross_attn'\), or null, got \['mlp'\]"),
    ({"method": "full", "trainable": []}, r"^trainable: must be a non-empty list"),
    ({"method": "mtu", "trainable": ["ffn"]}, r"^trainable: selects what a `full` fine-tune trains; method 'mtu'"),
])
def test_bad_selections_are_named(model, message):
    with pytest.raises(InputError, match=message):
        ModelConfig(base="random:tiny", **model)
