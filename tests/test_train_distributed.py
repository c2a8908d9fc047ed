"""2-process DDP on CPU (gloo) through `accelerate launch` equals a 1-process run with the same global batch."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mtu.training import config_from_dict, train

from .training_parts import assert_same_training, tiny_run_config


def _stop_with_stacks(process: subprocess.Popen) -> tuple[str, str]:
    """Makes every descendant of `process` dump its Python stacks (SIGABRT + faulthandler), then kills them all."""
    import time

    import psutil  # accelerate depends on it

    family = psutil.Process(process.pid).children(recursive=True)
    for member in family:
        try:
            member.send_signal(signal.SIGABRT)
        except psutil.NoSuchProcess:
            pass
    time.sleep(2)
    for member in family + [psutil.Process(process.pid)]:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    return process.communicate()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# After the rest of the suite has run in the same pytest process, one launched rank has been seen to hang (both
# times in a full run; never when this test runs in its own process), so it runs in a second invocation.
@pytest.mark.isolated
@pytest.mark.skipif(shutil.which("accelerate") is None and not Path(sys.executable).with_name("accelerate").exists(),
                    reason="accelerate launcher not installed")
def test_two_process_ddp_equals_one_process(tmp_path):
    common = {"max_steps": 3, "checkpoint_every": 0, "task_sampling": "stratified"}
    single = tiny_run_config(tmp_path, batch_size=4, **common)
    single["output_dir"] = str(tmp_path / "single")
    train(config_from_dict(single))

    double = tiny_run_config(tmp_path, batch_size=2, **common)  # 2 processes x 2 = the same global batch of 4
    double["output_dir"] = str(tmp_path / "ddp")
    config_path = tmp_path / "ddp.yaml"
    config_path.write_text(yaml.safe_dump(double))
    launcher = str(Path(sys.executable).with_name("accelerate"))
    # On a machine without GPUs, `--multi_gpu` starts CPU processes joined by gloo (accelerate's MULTI_CPU).
    # A free port, so a leftover or parallel process group cannot collide with this one. torch's elastic agent
    # starts each rank in a session of its own, so on timeout every descendant is found by parentage, made to
    # print its Python stacks (faulthandler, on SIGABRT) and killed: no rank is left waiting on a collective.
    command = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--main_process_port", str(_free_port()), "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "mtu.cli", "train", "--config", str(config_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    timeout = int(os.environ.get("MTU_DDP_TEST_TIMEOUT", "300"))
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _, stderr = _stop_with_stacks(process)
        pytest.fail(f"2-process DDP run hung for {timeout} s; the ranks' stacks:\n{stderr[-6000:]}")
    assert process.returncode == 0, stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "train_summary.json").read_text())
    assert summary["processes"] == 2
    assert summary["tasks_seen_per_process"] == [["edit", "t2i"], ["edit", "t2i"]]
    relative = assert_same_training(tmp_path / "single", tmp_path / "ddp", single["model"]["base"])
    print(f"2-process DDP vs 1 process: relative weight difference {relative:.2e}")
