"""`benchmarks/gpu.py --device cpu --tiny`: the GPU benchmark's code runs end to end on tiny UNets, so that the GPU
run is one command that works the first time."""

from __future__ import annotations

import json
import sys

import pytest

from .scripts import load_benchmark

LATENCY_MODELS = {"base", "MTU folded", "MTU unfolded"}


def run_gpu_benchmark(monkeypatch, out, *extra) -> dict:
    monkeypatch.setattr(sys, "argv", ["gpu.py", "--device", "cpu", "--tiny", "--out", str(out), *extra])
    load_benchmark("gpu").main()
    return json.loads((out / "gpu.json").read_text())


def test_tiny_cpu_mode_writes_every_table(tmp_path, monkeypatch):
    record = run_gpu_benchmark(monkeypatch, tmp_path / "out")
    assert record["card"] == "CPU" and record["tiny"] and record["compile"] == "none"
    for arch in ("sd15", "sdxl"):
        rows = [row for row in record["latency"] if row["arch"] == arch]
        assert {row["model"] for row in rows} - LATENCY_MODELS == {next(r["model"] for r in rows if "LoRA" in r["model"])}
        assert all(row["mode"] == "eager" and row["ms"] > 0 and row["peak_gb"] > 0 for row in rows)
        assert next(row for row in rows if row["model"] == "base")["latency_vs_base"] == 1.0
        training = {row["method"]: row for row in record["training"] if row["arch"] == arch}
        assert set(training) == {"MTU", "full", "LoRA"}
        assert all(row["samples_per_s"] > 0 and row["tflops_per_step"] > 0 and row["mfu"] is None
                   for row in training.values())
        # full fine-tuning trains every weight; MTU and the matched LoRA train far fewer, about as many as each other
        assert training["full"]["trainable_m"] > 2 * training["MTU"]["trainable_m"]
        assert 0.5 < training["LoRA"]["trainable_m"] / training["MTU"]["trainable_m"] < 2
    markdown = (tmp_path / "out" / "gpu.md").read_text()
    assert "| sdxl | MTU folded | eager |" in markdown and "| sd15 | LoRA |" in markdown


@pytest.mark.slow
def test_tiny_cpu_mode_compiles(tmp_path, monkeypatch):
    """The compiled rows' code path (dynamo tracing; `--compile eager` skips inductor's code generation)."""
    record = run_gpu_benchmark(monkeypatch, tmp_path / "out", "--compile", "eager", "--archs", "sd15")
    compiled = {row["model"] for row in record["latency"] if row["mode"] == "compiled"}
    assert compiled == LATENCY_MODELS
