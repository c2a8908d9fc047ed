"""`mtu chat` refuses bad command-line input in one line (exit 2) before any model loads."""

from __future__ import annotations

import socket

import pytest

from mtu.cli import main


@pytest.mark.parametrize("argv, message", [
    (["--port", "70000"], "--port: must be an integer in [1, 65535], got 70000."),
    (["--port", "0"], "--port: must be an integer in [1, 65535], got 0."),
    (["--host", "my laptop"], "--host: must be an IP address such as 127.0.0.1"),
    (["--dtype", "float8", "--port", "{free}"], "--dtype: must be one of ('float32', 'float16', 'bfloat16'), got "
                                                "'float8'."),
    (["--device", "cuda:7", "--port", "{free}"], "`device` 'cuda:7' is not available here"),
    (["--model", "{missing}", "--port", "{free}"], "no MTU adapter in"),
])
def test_bad_chat_arguments_are_one_line(argv, message, capsys, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = str(probe.getsockname()[1])
    argv = [a.format(free=free, missing=tmp_path / "nothing") for a in argv]
    assert main(["chat", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mtu: error: ") and message in err[-1], err


def test_a_port_in_use_is_refused(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["chat", "--port", str(port)]) == 2
    assert f"--port: cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_a_missing_gradio_is_one_line_naming_the_extra(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError, as when not installed
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = str(probe.getsockname()[1])
    assert main(["chat", "--port", free]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mtu: error: `mtu chat` needs gradio, which is not installed") and err.count("\n") == 1, err
    assert "mtu-diffusion[chat]" in err


def test_flags_are_checked_before_gradio_is_imported(monkeypatch, capsys, tmp_path):
    """Before: a bad `--model` or `--dtype` was found only after gradio's import (seconds), so a missing gradio
    hid it."""
    import sys

    monkeypatch.setitem(sys.modules, "gradio", None)
    assert main(["chat", "--model", str(tmp_path / "nothing")]) == 2
    assert "no MTU adapter in" in capsys.readouterr().err
    assert main(["chat", "--dtype", "float8"]) == 2
    assert "--dtype: must be one of" in capsys.readouterr().err
