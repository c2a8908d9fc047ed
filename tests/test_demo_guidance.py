"""benchmarks/demo_guidance.py: bad counts are refused in one line before any training."""

import pytest

from .scripts import load_benchmark


@pytest.mark.parametrize("argv, message", [(["--count", "0"], "--count 0: must be 1 or more"),
                                           (["--steps", "-1"], "--steps -1: must be 1 or more")])
def test_demo_guidance_refuses_counts_below_one(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit):
        load_benchmark("demo_guidance").main(["--run", str(tmp_path / "run"), *argv])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing trained
