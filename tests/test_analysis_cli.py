"""`mtu analyze`'s command-line edges: matplotlib missing (one line naming the extra, before any work), and output
folders that are never written over (another command's files, the inputs)."""

from __future__ import annotations

import sys

import pytest

import mtu
from mtu.analysis import MissingExtraError, router_weights, save
from mtu.cli import main


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapter") / "a"
    mtu.upcycle(mtu.load_base_unet("random:tiny"), mtu.MTUConfig(tasks=["t2i", "sr"], num_experts=2),
                fingerprint=False).save_pretrained(folder)
    return folder


def test_missing_matplotlib_is_one_line_with_the_extra(adapter, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    for argv in (["router", str(adapter)], ["cost", str(adapter)],
                 ["deviation", "--base", "random:tiny", "--finetuned", "random:tiny:1"]):
        code = main(["analyze", *argv, "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert err.startswith("mtu: error: ") and 'pip install "mtu-diffusion[analysis]"' in err
        assert not (tmp_path / "out").exists()
    result = router_weights(adapter)  # the numbers need no matplotlib; only the figures do
    with pytest.raises(ImportError, match="mtu-diffusion"):
        save(result, tmp_path / "out")
    assert issubclass(MissingExtraError, mtu.InputError)


def test_outputs_are_never_written_over(adapter, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["analyze", "router", str(adapter), "--out", str(out)]) == 0
    assert main(["analyze", "router", str(adapter), "--out", str(out)]) == 0  # its own earlier output
    code = main(["analyze", "cost", str(adapter), "--out", str(out)])  # another analysis's folder
    assert code == 2 and "already holds files" in capsys.readouterr().err
    code = main(["analyze", "router", str(adapter), "--out", str(adapter / "figures")])
    assert code == 2 and "lies inside the adapter" in capsys.readouterr().err
    assert not (adapter / "figures").exists()
