"""Metric weights offline: where they are looked for, one line naming a missing file (with where it comes from and how
to place it), torchvision's AlexNet file read without unpickling anything else, and tiny random networks marked as
such (issue 16, point 2)."""

from __future__ import annotations

import pytest
import torch

from mtu.errors import InputError, MissingExtraError
from mtu.evaluation.networks import AlexNetFeatures
from mtu.evaluation.weights import (ENV_VAR, WEIGHT_FILES, check_metric_weights, feature_dim, load_networks,
                                    require_torch_fidelity, resolve_metric_weights, write_random_networks)


def test_metric_weights_come_from_the_argument_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_metric_weights(None).root is None  # online
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert resolve_metric_weights(None).root == tmp_path.resolve()
    assert resolve_metric_weights("random").random
    with pytest.raises(InputError, match=r"^\$MTU_METRIC_WEIGHTS: .*not there"):
        monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing"))
        resolve_metric_weights(None)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputError, match=r"^--metric-weights: .*is a file"):
        resolve_metric_weights(tmp_path / "file.txt")


@pytest.mark.parametrize("network", ["clip", "alexnet"])
def test_a_missing_weight_file_is_one_line_naming_it_its_source_and_how_to_place_it(tmp_path, network):
    weights = resolve_metric_weights(tmp_path)
    with pytest.raises(InputError) as caught:
        check_metric_weights(weights, [network])
    message = str(caught.value)
    assert "\n" not in message
    assert WEIGHT_FILES[network].name in message and str(tmp_path) in message
    assert {"clip": "openai/clip-vit-large-patch14", "alexnet": "https://download.pytorch.org/models/"}[network] \
        in message


def test_fid_without_torch_fidelity_says_how_to_get_it():
    try:
        import torch_fidelity  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("torch-fidelity imports here; the message is for machines where it does not")
    with pytest.raises(MissingExtraError, match="torch-fidelity.*torchvision.*--metric-weights random"):
        require_torch_fidelity()
    with pytest.raises(MissingExtraError):
        check_metric_weights(resolve_metric_weights(None), ["inception"])


def torchvision_state() -> dict:
    """A state dict laid out as torchvision's alexnet-owt-7be5be79.pth (features.* and classifier.*)."""
    torch.manual_seed(0)
    state = {f"features.{key}": value for key, value in AlexNetFeatures().state_dict().items()}
    state.update({"classifier.1.weight": torch.zeros(4, 9216), "classifier.1.bias": torch.zeros(4)})
    return state


def test_torchvision_alexnet_file_loads_into_the_lpips_backbone(tmp_path):
    state = torchvision_state()
    torch.save(state, tmp_path / WEIGHT_FILES["alexnet"].name)
    networks, sources = load_networks(resolve_metric_weights(tmp_path), ["alexnet"])
    loaded = networks["alexnet"].backbone.state_dict()
    assert all(torch.equal(loaded[key[len("features."):]], value) for key, value in state.items()
               if key.startswith("features."))
    assert WEIGHT_FILES["alexnet"].name in sources["alexnet"] and "alex.pth" in sources["alexnet"]


class Payload:
    """Unpickling it would run code: create the file `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_with_code_in_it_is_refused_not_run(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"features.0.weight": Payload(marker)}, tmp_path / WEIGHT_FILES["alexnet"].name)
    with pytest.raises(InputError, match="not a plain state dict"):
        load_networks(resolve_metric_weights(tmp_path), ["alexnet"])
    assert not marker.exists()


def test_random_networks_folder_is_marked_and_loads(tmp_path):
    write_random_networks(tmp_path, seed=3, feature_dim=6)
    weights = resolve_metric_weights(tmp_path)
    assert weights.random and feature_dim(weights) == 6
    networks, _ = load_networks(weights, ["clip", "inception", "alexnet"])
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert networks["inception"](images).shape == (2, 6) and networks["inception"](images).dtype == torch.float64
    assert networks["clip"].images(images).norm(dim=-1).tolist() == pytest.approx([1.0, 1.0])
    assert networks["clip"].texts(["a red square", "x"]).shape[0] == 2
    (tmp_path / "tiny_lpips.safetensors").unlink()
    with pytest.raises(InputError, match="tiny_lpips.safetensors"):
        check_metric_weights(weights, ["alexnet"])
