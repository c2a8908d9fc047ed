"""benchmarks/demo_time.py: bad counts are refused in one line before any work."""

import pytest

from .scripts import load_benchmark


@pytest.mark.parametrize("argv, message", [(["--steps", "0"], "--steps must be a positive integer, got 0"),
                                           (["--count", "-3"], "--count must be a positive integer, got -3")])
def test_demo_time_refuses_counts_below_one(argv, message, capsys):
    with pytest.raises(SystemExit):
        load_benchmark("demo_time").main(argv)
    assert message in capsys.readouterr().err
