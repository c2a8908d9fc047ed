"""The checks that need a GPU, in one call of a lent machine (see docs/BENCHMARKS.md, "GPU session").

1. Distributed backends (issue 3): the trainer under FSDP2 and DeepSpeed ZeRO-2 through `accelerate launch`,
   with no code change, against a plain one-process run of the same tiny config (same global batch):
   final weights equal (tests/training_parts.assert_same_training's tolerance), an FSDP run resumed from its
   step-2 checkpoint ends where the uninterrupted one did, and FSDP's and DeepSpeed's checkpoints (whole tensors)
   resume in a plain process and end where the plain run did; and an FSDP2 run whose edit task has its own text
   encoder (`model.task_text_encoders`) against the plain one (MTU weights and the encoder).
2. The toy world's base (issue 4), in the background while 1 runs: `toyworld pretrain`'s text-to-image stage on the
   GPU (the shipped VAE reused), with the number of steps that fits `--pretrain-seconds`, measured from a short
   calibration run. The pipeline folder comes back as base.tar.
3. The toy-world quality benchmark at the paper's per-task budget (issue 4; `--quality-seconds`, instead of 2):
   benchmarks/toyworld_quality.py `--budget per-task`, one process per (row, seed) in `--quality-jobs`' order,
   `--quality-workers` at a time sharing the GPU (training there, scoring on one CPU thread each), none started
   too late to end by the deadline. Each job's quality.json and log tail come back in quality.tar; join them with
   `toyworld_quality.py --merge`.

4. The long toy-world run (issue 11; `--longrun-seconds`, instead of 2), in the background: its newest state,
   committed in benchmarks/recipes/toyworld-mtu-long-state/run/, resumed on the GPU (`--resume auto`; the run folder
   moves, which resuming allows) for that many seconds. Its newest checkpoint comes back in longrun.tar: put it into
   the CPU run's checkpoints folder (or the state folder) and the run continues from there. The per-sample noise
   is drawn on the CPU, so the GPU continues the same sample stream; its arithmetic (TF32) is not bit-equal.

    python scripts/gpu_checks.py --out $OUT [--pretrain-seconds 420] [--skip-backends] [--skip-pretrain]
                                 [--quality-seconds 0] [--quality-workers 6] [--quality-jobs ROW:SEED,...]
                                 [--quality-budget per-task] [--quality-extra "--steps 4 --eval-count 2"]
                                 [--longrun-seconds 0] [--longrun-checkpoint-every 500]

Prints a table last; writes checks.json, the logs, base.tar, quality.tar and longrun.tar under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _run(name: str, command: list[str], log_dir: Path, timeout: int = 150) -> dict:
    """Runs `command`, its output appended to log_dir/backends.log (one file: the device returns few)."""
    start = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=timeout, cwd=ROOT)
        code, output = result.returncode, result.stdout + result.stderr
    except subprocess.TimeoutExpired as error:
        parts = [part.decode(errors="replace") if isinstance(part, bytes) else part or ""
                 for part in (error.stdout, error.stderr)]
        code, output = "timeout", "".join(parts)
    seconds = time.perf_counter() - start
    with open(log_dir / "backends.log", "a") as log:
        log.write(f"\n===== {name}: {' '.join(command)}\n{output}\n===== {name}: rc={code} {seconds:.1f} s\n")
    tail = output[-1500:]
    print(f"[{name}] rc={code} {seconds:.0f} s", flush=True)
    if code != 0:
        print(tail, flush=True)
    return {"rc": code, "seconds": round(seconds, 1), "tail": tail if code != 0 else ""}


def _train_command(backend: str, config: Path, resume: bool = False) -> list[str]:
    # A resumed copy holds only the checkpoint (`_resume_copy`), not the marker of an `mtu train` folder.
    tail = ["-m", "mtu.cli", "train", "--config", str(config)] + (["--resume", "auto", "--overwrite"] if resume else [])
    if backend == "plain":
        return [sys.executable] + tail
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]
    if backend == "fsdp":
        launch += ["--use_fsdp", "--fsdp_version", "2", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
                   "--fsdp_cpu_ram_efficient_loading", "false", "--fsdp_reshard_after_forward", "true"]
    elif backend == "deepspeed":
        launch += ["--use_deepspeed", "--zero_stage", "2"]
    return launch + tail


def _compare(expected: Path, actual: Path, base: str, check=None) -> dict:
    """`check` (default `assert_same_training`, the MTU weights) on two runs, as a result row."""
    from tests.training_parts import assert_same_training

    try:
        return {"same": True, "relative": (check or assert_same_training)(expected, actual, base)}
    except AssertionError as error:
        return {"same": False, "error": str(error)[:300]}
    except Exception as error:  # a run that wrote nothing
        return {"same": False, "error": f"{type(error).__name__}: {error}"[:300]}


def _resume_copy(source: Path, target: Path, checkpoint_step: int) -> None:
    """`target`: `source`'s run cut back to its `checkpoint_step` checkpoint (as if killed right after it)."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)  # no config.yaml: the resumed run writes its own
    name = f"checkpoint-{checkpoint_step:07d}"
    shutil.copytree(source / "checkpoints" / name, target / "checkpoints" / name)


def backends(work: Path, out: Path) -> dict:
    from tests.training_parts import assert_same_task_encoder, tiny_run_config

    work.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    runs = {}
    # "-text": the edit task with its own text encoder (`model.task_text_encoders`), which the model encodes inside
    # its forward, so FSDP2 shards it in the root unit (DDP is tested on the CPU: tests/test_train_distributed.py).
    for name in ("plain", "fsdp", "deepspeed", "plain-text", "fsdp-text"):
        backend = name.removesuffix("-text")
        config = tiny_run_config(work, batch_size=4, max_steps=4, checkpoint_every=2, keep_checkpoints=4,
                                 validate_every=2, task_sampling="stratified")
        config["output_dir"] = str(work / name)
        if name.endswith("-text"):
            config["model"]["task_text_encoders"] = ["edit"]
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        runs[name] = (path, Path(config["output_dir"]))
        results[name] = _run(name, _train_command(backend, path), out)
        summary = Path(config["output_dir"]) / "train_summary.json"
        if summary.is_file():  # which backend really ran (accelerate falls back silently in some set-ups)
            record = json.loads(summary.read_text())
            results[name].update({k: record.get(k) for k in ("distributed_type", "sharded_parameters")})
    base = yaml.safe_load(runs["plain"][0].read_text())["model"]["base"]
    plain_dir = runs["plain"][1]
    for backend in ("fsdp", "deepspeed"):
        results[f"{backend} == plain"] = _compare(plain_dir, runs[backend][1], base)
    results["fsdp-text == plain-text"] = _compare(runs["plain-text"][1], runs["fsdp-text"][1], base)
    results["fsdp-text == plain-text (edit encoder)"] = _compare(runs["plain-text"][1], runs["fsdp-text"][1], base,
                                                                 assert_same_task_encoder)
    # Resume checks: cut a run back to its step-2 checkpoint and finish it.
    for source, resumed_with in (("fsdp", "fsdp"), ("fsdp", "plain"), ("deepspeed", "plain"), ("plain", "plain")):
        name = f"{source} ckpt-2 resumed by {resumed_with}"
        target = work / f"{source}-resumed-by-{resumed_with}"
        try:
            _resume_copy(runs[source][1], target, 2)
        except FileNotFoundError as error:
            results[name] = {"same": False, "error": f"no checkpoint to resume: {error}"[:300]}
            continue
        config = yaml.safe_load(runs[source][0].read_text())
        config["output_dir"] = str(target)
        path = work / f"{target.name}.yaml"
        path.write_text(yaml.safe_dump(config))
        run = _run(target.name, _train_command(resumed_with, path, resume=True), out)
        expected = runs[source][1] if resumed_with == source else plain_dir
        results[name] = {**run, **_compare(expected, target, base)}
    return results


def _calibrate(step_counts=(20, 120)) -> float:
    """Seconds per text-to-image step at the pretrain settings, from two short runs (their difference)."""
    from mtu.toyworld.components import build_tokenizer, shipped_base
    from mtu.toyworld.pretrain import PretrainConfig, train_t2i
    from mtu.toyworld.scene import make_scenes
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(shipped_base(), subfolder="vae").float().requires_grad_(False)
    tokenizer = build_tokenizer(Path("/tmp/gpu_checks_tokenizer"))
    scenes = make_scenes(0, 512, "train")
    times = []
    for steps in step_counts:
        config = PretrainConfig(**{**PRETRAIN, "steps": steps, "warmup": 10, "scenes": 512})
        start = time.perf_counter()
        train_t2i(config, vae, tokenizer, scenes)
        times.append(time.perf_counter() - start)
    return (times[1] - times[0]) / (step_counts[1] - step_counts[0])


# eval_count 64 keeps the device run short; the shipped figure is re-measured on 256 captions on the CPU.
PRETRAIN = {"batch": 128, "lr": 5e-4, "warmup": 500, "ema_decay": 0.9995, "scenes": 100_000, "device": "auto",
            "eval_count": 64}


def pretrain_base(out: Path, seconds: float) -> dict:
    from mtu.toyworld.components import shipped_base
    from mtu.toyworld.pretrain import PretrainConfig, pretrain

    start = time.perf_counter()
    per_step = _calibrate()
    # Left for encoding the scenes, saving and the CPU evaluation of 256 captions.
    steps = int(max(200, (seconds - (time.perf_counter() - start) - 120) / per_step) // 100 * 100)
    print(f"[pretrain] {per_step * 1000:.1f} ms/step at batch {PRETRAIN['batch']}: {steps} steps", flush=True)
    config = PretrainConfig(**{**PRETRAIN, "out": str(out / "base"), "steps": steps,
                               "vae_from": str(shipped_base())})
    record = pretrain(config)
    with tarfile.open(out / "base.tar", "w") as tar:
        tar.add(out / "base", arcname="base")
    shutil.rmtree(out / "base")
    return {"ms_per_step": per_step * 1000, "steps": steps, "faithfulness": record["evaluation"]["faithfulness"],
            "t2i_seconds": record["t2i_seconds"], "final_loss": record["t2i_final_loss"],
            "seconds": time.perf_counter() - start}


QUALITY_JOBS = ("mtu-n4:0,mtu-n4:1,single:sr:0,single:sr:1,lora:0,ia3:0,lora:1,ia3:1,single:t2i:0,single:edit:0,"
                "single:inpaint:0,base:0,single:t2i:1,single:edit:1,single:inpaint:1,base:1,mtu-n1:0,mtu-n2:0,"
                "mtu-n8:0,mtu-top4of8:0,mtu-n4-shard:0,mtu-n1:1,mtu-n2:1,mtu-n8:1,mtu-top4of8:1,mtu-n4-shard:1")


LONGRUN_STATE = ROOT / "benchmarks" / "recipes" / "toyworld-mtu-long-state" / "run"
LONGRUN_RECIPE = ROOT / "benchmarks" / "recipes" / "toyworld-mtu-long.yaml"


def longrun(out: Path, work: Path, seconds: float, checkpoint_every: int) -> dict:
    """Continues the long toy-world run from its committed state for `seconds` (then stops it), and packs its
    config and newest checkpoint (or `final/`, if it ended) into out/longrun.tar. Returns the steps made."""
    from mtu.training.checkpoint import checkpoint_step, list_checkpoints

    run = work / "longrun"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(LONGRUN_STATE, run)
    first = list_checkpoints(run)[-1]
    config = yaml.safe_load(LONGRUN_RECIPE.read_text())
    config.update(output_dir=str(run), checkpoint_every=checkpoint_every)  # both may change on resuming
    config_path = work / "longrun.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    start = time.perf_counter()
    with open(out / "longrun-train.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "mtu.cli", "train", "--config", str(config_path),
                                    "--resume", "auto"], stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT)
        try:
            code = process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            process.kill()  # checkpoints are written atomically: the newest complete one survives
            process.wait()
            code = "stopped at the deadline"
    elapsed = time.perf_counter() - start
    last = list_checkpoints(run)[-1]
    steps = checkpoint_step(last) - checkpoint_step(first)
    with tarfile.open(out / "longrun.tar", "w") as tar:
        for name in ("config.yaml", ".mtu-output.json"):
            tar.add(run / name, arcname=f"run/{name}")
        tar.add(last, arcname=f"run/checkpoints/{last.name}")
        if (run / "final").is_dir():
            tar.add(run / "final", arcname="run/final")
    log_text = (out / "longrun-train.log").read_text(errors="replace")
    (out / "longrun-train.log").write_text(log_text[-4000:])  # the progress bar's last lines are enough
    return {"rc": code, "seconds": round(elapsed), "from": first.name, "to": last.name, "steps": steps,
            "steps_per_second": round(steps / elapsed, 2), "final": (run / "final").is_dir()}


def quality_pool(out: Path, work: Path, seconds: float, workers: int, jobs: list[str], extra: list[str],
                 budget: str = "per-task") -> dict:
    """Runs the quality benchmark's (row, seed) `jobs` side by side, `workers` at a time, until `seconds` pass:
    a job on several tasks (4x the steps at the per-task budget) starts only in the first half of the window,
    any other in the first 80%; what still runs at the deadline is stopped. Returns {job: rc, seconds}."""
    from benchmarks.toyworld_quality import row_tasks

    start = time.perf_counter()
    folder = work / "quality"
    shutil.rmtree(folder, ignore_errors=True)
    pending, running, record = list(jobs), {}, {}
    env = {**_env(), "OMP_NUM_THREADS": "1"}
    while pending or running:
        elapsed = time.perf_counter() - start
        while pending and len(running) < workers:
            row, seed = pending[0].rsplit(":", 1)
            if elapsed > seconds * (0.5 if budget == "per-task" and len(row_tasks(row)) > 1 else 0.8):
                record.update({job: {"rc": "not started"} for job in pending})
                pending = []
                break
            job = pending.pop(0)
            target = folder / f"{row.replace(':', '-')}-seed{seed}"
            target.mkdir(parents=True)
            log = open(target / "log.txt", "w")
            command = [sys.executable, "benchmarks/toyworld_quality.py", "--rows", row, "--seeds", seed,
                       "--budget", budget, "--out", str(target)] + extra
            running[job] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT),
                            time.perf_counter(), target)
            print(f"[quality] {elapsed:.0f} s: started {job}", flush=True)
        for job, (process, began, target) in list(running.items()):
            late = time.perf_counter() - start > seconds
            if late:
                process.kill()
            if process.poll() is not None or late:
                process.wait()
                record[job] = {"rc": "stopped at the deadline" if late else process.returncode,
                               "seconds": round(time.perf_counter() - began)}
                print(f"[quality] {time.perf_counter() - start:.0f} s: {job} {record[job]}", flush=True)
                del running[job]
        time.sleep(2)
    with tarfile.open(out / "quality.tar", "w") as tar:  # the JSONs and each log's last 4000 characters
        for target in sorted(folder.iterdir()):
            if (target / "quality.json").is_file():
                tar.add(target / "quality.json", arcname=f"quality/{target.name}/quality.json")
            tail = (target / "log.txt").read_text(errors="replace")[-4000:]
            (target / "log-tail.txt").write_text(tail)
            tar.add(target / "log-tail.txt", arcname=f"quality/{target.name}/log-tail.txt")
    return record


def _start_part(out: Path, part: str, flags: list[str]) -> subprocess.Popen:
    """This script again, in the background, running only `part` (it writes OUT/PART.json; its output: PART.log)."""
    log = open(out / f"{part}.log", "w")
    return subprocess.Popen([sys.executable, __file__, "--out", str(out), f"--{part}-only"] + flags,
                            stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default="/tmp/gpu_checks")
    parser.add_argument("--pretrain-seconds", type=float, default=420)
    parser.add_argument("--skip-backends", action="store_true")
    parser.add_argument("--skip-pretrain", action="store_true")
    parser.add_argument("--pretrain-only", action="store_true", help="(internal) run part 2 in this process")
    parser.add_argument("--quality-seconds", type=float, default=0, help="part 3's window (0: skip part 3)")
    parser.add_argument("--quality-workers", type=int, default=6)
    parser.add_argument("--quality-jobs", default=QUALITY_JOBS)
    parser.add_argument("--quality-budget", choices=("per-task", "per-row"), default="per-task")
    parser.add_argument("--quality-extra", default="", help="more toyworld_quality.py arguments (a smoke test's)")
    parser.add_argument("--quality-only", action="store_true", help="(internal) run part 3 in this process")
    parser.add_argument("--longrun-seconds", type=float, default=0, help="part 4's window (0: skip part 4)")
    parser.add_argument("--longrun-checkpoint-every", type=int, default=500)
    parser.add_argument("--longrun-only", action="store_true", help="(internal) run part 4 in this process")
    args = parser.parse_args()
    if args.longrun_checkpoint_every < 1:
        parser.error(f"--longrun-checkpoint-every must be at least 1 (got {args.longrun_checkpoint_every})")
    if args.quality_seconds > 0:
        from benchmarks.toyworld_quality import ALL_ROWS

        bad = [job for job in args.quality_jobs.split(",")
               if job.rpartition(":")[0] not in ALL_ROWS or not job.rpartition(":")[2].isdigit()]
        if bad:
            parser.error(f"--quality-jobs: {bad} are not ROW:SEED with a row of benchmarks/toyworld_quality.py")
        if args.quality_workers < 1:
            parser.error(f"--quality-workers must be at least 1 (got {args.quality_workers})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.pretrain_only:
        record = pretrain_base(out, args.pretrain_seconds)
        (out / "pretrain.json").write_text(json.dumps(record, indent=1))
        return 0
    if args.quality_only:
        record = quality_pool(out, Path(args.work), args.quality_seconds, args.quality_workers,
                              args.quality_jobs.split(","), args.quality_extra.split(), args.quality_budget)
        (out / "quality.json").write_text(json.dumps(record, indent=1))
        return 0
    if args.longrun_only:
        Path(args.work).mkdir(parents=True, exist_ok=True)
        record = longrun(out, Path(args.work), args.longrun_seconds, args.longrun_checkpoint_every)
        (out / "longrun.json").write_text(json.dumps(record, indent=1))
        return 0

    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"device: {device}; torch {torch.__version__}", flush=True)
    background = {}  # the GPU has room for all; parts 2 and 3 are the long ones
    if not args.skip_pretrain:
        background["pretrain"] = _start_part(out, "pretrain", ["--pretrain-seconds", str(args.pretrain_seconds)])
    if args.quality_seconds > 0:
        background["quality"] = _start_part(out, "quality", [
            "--work", args.work, "--quality-seconds", str(args.quality_seconds), "--quality-workers",
            str(args.quality_workers), "--quality-jobs", args.quality_jobs, "--quality-budget", args.quality_budget,
            "--quality-extra=" + args.quality_extra])
    if args.longrun_seconds > 0:
        background["longrun"] = _start_part(out, "longrun", [
            "--work", args.work, "--longrun-seconds", str(args.longrun_seconds),
            "--longrun-checkpoint-every", str(args.longrun_checkpoint_every)])
    results = {"device": device, "torch": torch.__version__}
    if not args.skip_backends:
        results["backends"] = backends(Path(args.work), out)
    for part, process in background.items():
        process.wait()
        record = out / f"{part}.json"
        results[part] = (json.loads(record.read_text()) if record.is_file()
                         else {"error": (out / f"{part}.log").read_text()[-1500:]})
    (out / "checks.json").write_text(json.dumps(results, indent=1))
    print(f"\n| check ({device}) | result |\n|---|---|")
    for name, value in results.get("backends", {}).items():
        if "same" in value:
            shown = f"same, relative {value['relative']:.2e}" if value["same"] else f"DIFFERS/FAILED: {value['error']}"
        else:
            shown = f"rc {value['rc']}, {value['seconds']} s, {value.get('distributed_type')}, " \
                    f"sharded parameters: {value.get('sharded_parameters')}"
        print(f"| {name} | {shown} |")
    if "pretrain" in results:
        print(f"| pretrain | {json.dumps(results['pretrain'])[:400]} |")
    for job, value in results.get("quality", {}).items():
        print(f"| quality {job} | {value} |")
    if "longrun" in results:
        print(f"| long run | {json.dumps(results['longrun'])[:400]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
