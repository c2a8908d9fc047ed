"""The long toy-world run's arm script refuses a bad arm or a missing parent in one line, before any training."""

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks/recipes/toyworld-mtu-long-state/run-arm.sh"


def _run(*args, longrun: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "LONGRUN": str(longrun), "PYTHON": "/bin/echo"})


def test_a_bad_arm_is_refused_in_one_line(tmp_path):
    result = _run("nope", longrun=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "run-arm.sh: the arm must be big, kinds, restart or restart2, not 'nope'\n"


def test_an_arm_without_its_parent_is_refused_and_one_with_it_starts(tmp_path):
    result = _run("restart2", longrun=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (f"run-arm.sh: {tmp_path}/runs/toyworld-mtu-restart/final is missing (the parent "
                             "arm's end)\n")
    assert not (tmp_path / "train-restart2.log").exists()
    (tmp_path / "runs/toyworld-mtu-restart/final").mkdir(parents=True)
    assert _run("restart2", longrun=tmp_path).returncode == 0  # PYTHON=/bin/echo: the command line, logged
    assert (tmp_path / "train-restart2.log").read_text() == (
        f"-m mtu.cli train --config {tmp_path}/train-restart2.yaml --resume auto\n")
