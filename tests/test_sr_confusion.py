"""benchmarks/sr_confusion.py: bad input is refused in one line before the model loads."""

import pytest

from .scripts import load_benchmark


def test_sr_confusion_refuses_an_unknown_scheduler_before_loading_the_model(capsys):
    confusion = load_benchmark("sr_confusion")
    with pytest.raises(SystemExit):
        confusion.main(["--model", "/nonexistent", "--schedulers", "EulerDiscreteScheduler,NoSuchScheduler"])
    assert "--schedulers: 'NoSuchScheduler' is not a diffusers scheduler class" in capsys.readouterr().err
