"""MTUConfig: defaults, validation messages that name the field and value, JSON round-trip."""

import pytest

from mtu import InputError, MTUConfig


def test_defaults_are_the_papers_sd15_setting():
    config = MTUConfig()
    assert config.tasks == ["t2i", "edit", "sr", "inpaint"]
    assert config.num_experts == 4 and config.granularity == 0.25 and config.top_k is None
    assert config.init == "preserve" and config.target_blocks is None


def test_granularity_defaults_to_one_over_n():
    assert MTUConfig(num_experts=8).granularity == 1 / 8


def test_json_round_trip():
    config = MTUConfig(tasks=["t2i", "inpaint_mask"], num_experts=8, granularity=0.5, top_k=4, router_hidden_size=32,
                       task_embedding_size=16, init="shard", target_blocks=["mid_block.*"], seed=3)
    assert MTUConfig.from_json_string(config.to_json_string()) == config


def test_unknown_key_warns_naming_it():
    with pytest.warns(UserWarning, match="'experts_count'"):
        config = MTUConfig.from_dict({"num_experts": 2, "experts_count": 3})
    assert config.num_experts == 2


def test_tasks_accepts_comma_string():
    assert MTUConfig(tasks="t2i, edit").tasks == ["t2i", "edit"]


@pytest.mark.parametrize("kwargs, message", [
    ({"tasks": ["t2i", "colorise"]}, "^tasks: unknown task 'colorise'"),
    ({"tasks": []}, r"^tasks: must be a non-empty list of task names, got \[\]"),
    ({"tasks": ["t2i", "t2i"]}, "^tasks: has duplicates"),
    ({"num_experts": 0}, "^num_experts: must be an integer >= 1, got 0"),
    ({"num_experts": "4"}, "^num_experts: must be an integer >= 1, got '4'"),
    ({"granularity": 0}, "^granularity: must be a finite number > 0 .*got 0"),
    ({"granularity": -0.5}, "^granularity: must be a finite number > 0 .*got -0.5"),
    ({"granularity": float("inf")}, "^granularity: must be a finite number > 0 .*got inf"),
    ({"granularity": float("nan")}, "^granularity: must be a finite number > 0 .*got nan"),
    ({"top_k": 5}, r"^top_k: must be None or an integer in \[1, num_experts=4\], got 5"),
    ({"top_k": 0}, "^top_k: .*got 0"),
    ({"init": "copy"}, "^init: must be one of .*got 'copy'"),
    ({"num_experts": 1, "granularity": 0.5}, "^init: .*needs num_experts \\* granularity >= 1.*1 \\* 0.5 = 0.5"),
    ({"router_hidden_size": 0}, "^router_hidden_size: must be an integer >= 1, got 0"),
    ({"target_blocks": []}, "^target_blocks: must be None"),
    ({"target_blocks": "mid_block.*"}, "^target_blocks: must be None .*got 'mid_block.\\*'"),
])
def test_bad_values_name_field_and_value(kwargs, message):
    with pytest.raises(InputError, match=message):
        MTUConfig(**kwargs)


def test_shard_init_allows_narrow_models():
    assert MTUConfig(num_experts=1, granularity=0.5, init="shard").granularity == 0.5


def test_expert_width():
    config = MTUConfig(num_experts=3, granularity=1 / 3)
    assert config.expert_width(1280) is None
    assert config.expert_width(1275) == 425
