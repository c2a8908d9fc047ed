"""DeepSpeed ZeRO-2 on the CPU (its CPU accelerator, gloo): the trainer under `accelerate launch --use_deepspeed`
against a plain one-process run of the same tiny config, and a DeepSpeed step-2 checkpoint resumed in a plain
process (issue 13, point 5). Needs `deepspeed` installed (not a test dependency): in a separate venv,

    python -m venv /tmp/ds && /tmp/ds/bin/pip install torch==2.13.0 && DS_BUILD_OPS=0 /tmp/ds/bin/pip install deepspeed
    /tmp/ds/bin/pip install -e ".[test]"
    OMP_NUM_THREADS=1 /tmp/ds/bin/python scripts/deepspeed_cpu_check.py --work /tmp/ds-work

Prints a JSON of the runs and comparisons (tests/training_parts.assert_same_training); exit 1 if any differs.
scripts/gpu_checks.py runs the same comparisons (and FSDP2) on a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src"), str(ROOT / "scripts")]

import gpu_checks  # noqa: E402  (after the path set-up)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="folder for the runs (made; must not hold old runs)")
    args = parser.parse_args()
    from tests.training_parts import tiny_run_config

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    runs, results = {}, {}
    for backend in ("plain", "deepspeed"):
        config = tiny_run_config(work, batch_size=4, max_steps=4, checkpoint_every=2, keep_checkpoints=4,
                                 task_sampling="stratified")
        config["output_dir"] = str(work / backend)
        path = work / f"{backend}.yaml"
        path.write_text(yaml.safe_dump(config))
        runs[backend] = (path, work / backend)
        results[backend] = gpu_checks._run(backend, gpu_checks._train_command(backend, path), work, timeout=1200)
        summary = work / backend / "train_summary.json"
        if summary.is_file():  # which backend really ran
            results[backend]["distributed_type"] = json.loads(summary.read_text()).get("distributed_type")
    base = yaml.safe_load(runs["plain"][0].read_text())["model"]["base"]
    results["deepspeed == plain"] = gpu_checks._compare(work / "plain", work / "deepspeed", base)
    for source in ("deepspeed", "plain"):
        target = work / f"{source}-resumed-by-plain"
        gpu_checks._resume_copy(work / source, target, 2)
        config = yaml.safe_load(runs[source][0].read_text())
        config["output_dir"] = str(target)
        path = work / f"{target.name}.yaml"
        path.write_text(yaml.safe_dump(config))
        run = gpu_checks._run(target.name, gpu_checks._train_command("plain", path, resume=True), work, timeout=600)
        results[f"{source} ckpt-2 resumed by plain, against plain"] = {**run, **gpu_checks._compare(
            work / "plain", target, base)}
    print(json.dumps(results, indent=1))
    same = all(value.get("same", True) for value in results.values())
    return 0 if same and results["deepspeed"].get("distributed_type") == "DEEPSPEED" else 1


if __name__ == "__main__":
    sys.exit(main())
