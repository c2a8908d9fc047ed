"""The sixteenth round's four-task check of a trainable text encoder (benchmarks/text_encoder_mixture.py): bad
arguments are refused in one line before any work."""

import pytest

from .scripts import load_benchmark


@pytest.mark.parametrize("arguments, message", [
    (["--adapter", "no-such-folder"], "--adapter: expected an MTU adapter folder"),
    (["--adapter", "SHIPPED", "--steps", "0"], "--steps 0: must be 1 or more"),
    (["--adapter", "SHIPPED", "--config", "no-such.yaml"], "--config: no such file"),
    (["--adapter", "SHIPPED", "--count", "0"], "--count 0: must be 1 or more"),
    (["--adapter", "SHIPPED", "--step-offset", "-1"], "--step-offset -1: must be 0 or more"),
    (["--adapter", "SHIPPED", "--text-lr", "0"], "--text-lr 0.0: must be > 0"),
    (["--adapter", "SHIPPED", "--text-encoder", "no-such-folder"], "--text-encoder 'no-such-folder': a saved text"),
])
def test_bad_arguments_are_refused_before_any_work(capsys, tmp_path, arguments, message):
    script = load_benchmark("text_encoder_mixture")
    adapter = _adapter_without_encoders(tmp_path)
    with pytest.raises(SystemExit):
        script.main([adapter if value == "SHIPPED" else value for value in arguments]
                    + ["--out", "x", "--log", "y", "--train-text", "all"])
    assert message in capsys.readouterr().err


def test_default_config_is_the_shipped_recipe():
    script = load_benchmark("text_encoder_mixture")
    assert script.CONFIG.is_file() and script.CONFIG.parent.name == "mtu_model"


def _adapter_without_encoders(tmp_path) -> str:
    """An adapter folder as far as the script's checks read it (its record, with no task text encoders)."""
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "mtu_config.json").write_text("{}")
    return str(folder)


def test_an_adapter_with_task_text_encoders_is_refused(capsys, tmp_path):
    import json

    script = load_benchmark("text_encoder_mixture")
    adapter = tmp_path / "with-encoder"
    adapter.mkdir()
    (adapter / "mtu_config.json").write_text(json.dumps({"task_text_encoders": ["edit"]}))
    with pytest.raises(SystemExit):
        script.main(["--adapter", str(adapter), "--train-text", "none", "--out", "x", "--log", "y"])
    assert "holds task text encoders" in capsys.readouterr().err


def test_score_only_refuses_an_out_without_the_saved_arm_and_held_out_without_score_only(capsys, tmp_path):
    script = load_benchmark("text_encoder_mixture")
    common = ["--adapter", _adapter_without_encoders(tmp_path), "--log", str(tmp_path / "log.jsonl")]
    (tmp_path / "arm" / "final-adapter").mkdir(parents=True)  # the adapter, but not the edit arm's encoder
    with pytest.raises(SystemExit):
        script.main(common + ["--out", str(tmp_path / "arm"), "--train-text", "edit", "--score-only"])
    err = capsys.readouterr().err
    assert "--score-only" in err and "missing" in err and "text_encoder" in err
    with pytest.raises(SystemExit):
        script.main(common + ["--out", str(tmp_path / "arm"), "--train-text", "none", "--held-out"])
    assert "--held-out: only with --score-only" in capsys.readouterr().err


def test_text_encoder_start_is_for_the_edit_arm_alone(capsys, tmp_path):
    from mtu.shipped import shipped_base

    script = load_benchmark("text_encoder_mixture")
    encoder = str(shipped_base() / "text_encoder")  # a real saved encoder folder, but the arm trains all tasks'
    with pytest.raises(SystemExit):
        script.main(["--adapter", _adapter_without_encoders(tmp_path), "--text-encoder", encoder, "--train-text", "all", "--out", "x", "--log", "y"])
    assert "with --train-text edit only" in capsys.readouterr().err
