"""One honest error path: bad input (`InputError`) and errors about the user's files print one line and exit 2;
anything else is a bug and shows its traceback, a line saying so, and exits 1. A bug while building examples is
never counted as an unreadable sample."""

from __future__ import annotations

import errno

import pytest

import mtu.data
from mtu import InputError
from mtu.cli import BUG_LINE, main
from mtu.data import DataSourceConfig, build_dataset

from .data_builders import records_for, write_folder


@pytest.fixture
def validate_argv(tmp_path):
    path = write_folder(tmp_path / "src", records_for("captions", 2))
    return ["data", "validate", "--task", "t2i", "--format", "folder", "--path", str(path), "--schema", "captions"]


def run_raising(monkeypatch, capsys, argv, error):
    """Runs `mtu data validate` with `validate_source` raising `error`: stands in for a failure deep in a command."""
    def raising(*args, **kwargs):
        raise error

    monkeypatch.setattr(mtu.data, "validate_source", raising)
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("error", [RuntimeError("shape mismatch in the loss"), TypeError("unsupported operand"),
                                   KeyError("missing_key"), ValueError("an internal invariant"),
                                   OSError("a library's OSError without errno")])
def test_a_bug_shows_its_traceback_and_says_so(monkeypatch, capsys, validate_argv, error):
    code, err = run_raising(monkeypatch, capsys, validate_argv, error)
    lines = err.strip().splitlines()
    assert code == 1
    assert lines[0] == "Traceback (most recent call last):" and "in raising" in err
    assert lines[-2] == f"{type(error).__name__}: {error}" and lines[-1] == BUG_LINE
    assert "mtu: error:" not in err


def test_input_error_is_one_line(monkeypatch, capsys, validate_argv):
    code, err = run_raising(monkeypatch, capsys, validate_argv, InputError("must be > 0, got -1.", field="optim.lr"))
    assert code == 2 and err == "mtu: error: optim.lr: must be > 0, got -1.\n"


@pytest.mark.parametrize("error, line", [
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/x.png"),
     "No such file or directory: '/data/x.png'"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/run"), "Permission denied: '/data/run'"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/data/out.png"), "Is a directory: '/data/out.png'"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/data/f/x"), "Not a directory: '/data/f/x'"),
    (FileExistsError(errno.EEXIST, "File exists", "/data/out"), "File exists: '/data/out'"),
    (OSError(errno.ENOSPC, "No space left on device", "/full/out"), "No space left on device: '/full/out'"),
    (OSError(errno.EROFS, "Read-only file system", "/ro/out"), "Read-only file system: '/ro/out'"),
    (FileNotFoundError("`--config` file 'run.yaml' does not exist."), "`--config` file 'run.yaml' does not exist."),
])
def test_user_file_errors_are_one_line_naming_the_path(monkeypatch, capsys, validate_argv, error, line):
    code, err = run_raising(monkeypatch, capsys, validate_argv, error)
    assert code == 2 and err == f"mtu: error: {line}\n"


def test_a_bug_while_building_examples_is_not_an_unreadable_sample(monkeypatch, tmp_path):
    """Before: TypeError/KeyError/IndexError were in DATA_ERRORS, so a bug in `make_example` read as bad data."""
    path = write_folder(tmp_path / "src", records_for("captions", 2))
    dataset = build_dataset(DataSourceConfig("t2i", "folder", str(path), "captions", resolution=16))
    assert not any(issubclass(kind, (TypeError, KeyError, IndexError)) for kind in mtu.data.DATA_ERRORS)

    def broken(*args, **kwargs):
        raise TypeError("a bug in building the example")

    monkeypatch.setattr("mtu.data.dataset.make_example", broken)
    with pytest.raises(TypeError, match="a bug in building the example"):
        dataset[0]
    assert dataset.failures.count == 0
