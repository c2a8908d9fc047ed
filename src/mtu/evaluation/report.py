"""The results of `mtu eval` as JSON (what was evaluated, how, with which libraries) and as a table like the paper's
Table 2 (one row per model, one column per task metric).

Every metric entry has one format, the oracle's too: {"label", "value", "low", "high" (95% interval; absent for
FID/KID), "count", "higher_is_better", "protocol", "networks"} or {"label", "skipped": why}. Numbers computed with
random networks are stored under another key and label (`Metric.random_name`, e.g. "fd_random_net" for FID) and the
results say `"random_networks": true`.
"""

from __future__ import annotations

import json
import platform
from importlib import metadata

LIBRARIES = ("mtu-diffusion", "torch", "torchmetrics", "transformers", "diffusers", "numpy", "torch-fidelity")
ORACLE_PROTOCOL = ("toy-world oracle (mtu.toyworld.oracle): outputs parsed back into scenes and compared with the "
                   "exact target; rates with Wilson 95% intervals, means with bootstrap 95% intervals")
IMAGES_PROTOCOL = ("outputs written as 8-bit RGB PNG and scored as read back; the reference and input images "
                   "quantised to 8 bits the same way (from [-1, 1] tensors: round((x + 1) * 127.5))")


def settings_record(model: str, task: str, data: dict, seed: int, sampling: dict, dtype) -> dict:
    """What decides the generated images (JSON-normalised); an evaluation resumes only over the same record."""
    record = {"model": model, "task": task, "data": {k: v for k, v in data.items() if k != "count"}, "seed": seed,
              "sampling": sampling, "dtype": dtype}
    return json.loads(json.dumps(record, default=str))


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _metric_entries(plan, metrics: dict) -> dict:
    entries = {}
    for metric in plan.metrics:
        random = plan.weights.random and bool(metric.networks)
        key, label = (metric.random_name, metric.random_label) if random else (metric.name, metric.label)
        entry = {"label": label, **metrics[metric.name]}
        if "skipped" not in entry:
            protocol = f"RANDOM tiny networks standing in for: {metric.protocol}" if random else metric.protocol
            entry.update(higher_is_better=metric.higher_is_better, protocol=protocol,
                         networks="random" if random else "standard" if metric.networks else "none")
            if metric.min_features_factor and plan.force:
                entry["forced"] = True
        entries[key] = entry
    return entries


def _oracle_entries(task: str, summary: dict | None) -> dict:
    if summary is None:
        return {}
    from ..tasks.base import task_plugin

    evaluation = task_plugin(task).evaluation
    return {f"oracle_{field}": {"label": f"oracle {field}", **summary[field], "higher_is_better": True,
                                "protocol": ORACLE_PROTOCOL, "networks": "none"}
            for field in evaluation.card_fields}


def build_results(plan, metrics: dict, oracle: dict | None, scored: int, generated: int, sources: dict,
                  seconds: dict) -> dict:
    """The results JSON of one evaluation (`runner.evaluate`)."""
    record = {
        "model": plan.model, "model_folder": str(plan.source.folder), "base": str(plan.source.base),
        "task": plan.task, "data": plan.data.describe, "seed": plan.seed, "num_samples": plan.data.length,
        "scored": scored, "unreadable": list(plan.data.failures), "generated": generated,
        "sampling": {**plan.sampling, "batch_size": plan.batch_size, "dtype": plan.dtype or "float32",
                     "device": str(plan.device), "noise": "one CPU generator per example, seed * 1000003 + index"},
        "random_networks": plan.weights.random, "metric_weights": plan.weights.describe(),
        "metrics": {**_oracle_entries(plan.task, oracle), **_metric_entries(plan, metrics)},
        "oracle_summary": oracle,
        "protocol": {"images": IMAGES_PROTOCOL, "networks": sources,
                     "intervals": "95%: bootstrap of per-example values (mtu.stats), Wilson for rates"},
        "versions": library_versions(), "seconds": {key: round(value, 2) for key, value in seconds.items()},
    }
    return json.loads(json.dumps(record, default=str))


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _cell(entry: dict) -> str:
    if "skipped" in entry:
        return "n/a"
    text = _number(entry["value"])
    if "low" in entry:
        text += f" ({_number(entry['low'])}-{_number(entry['high'])})"
    elif "std" in entry:
        text += f" ± {_number(entry['std'])}"
    return text + ("*" if entry.get("forced") else "")


def format_table(results: list[dict], rows: str = "model") -> str:
    """A markdown table of one or more results, cells "value (95% interval)", arrows saying which way is better,
    notes for random networks and forced FID below it.

    Args:
        results: `evaluate`'s results (several tasks and models combine into one table).
        rows: "model", a row per model and a column per task metric, as the paper's Table 2; or "metric", a row per
            task metric and a column per model (narrower when one model is scored on many tasks).
    """
    if rows not in ("model", "metric"):
        raise ValueError(f"`rows` must be 'model' or 'metric', got {rows!r}.")
    cells, metrics, models = {}, {}, {}
    for result in results:
        models.setdefault(result["model"])
        for key, entry in result["metrics"].items():
            arrow = "" if "skipped" in entry else " ↑" if entry["higher_is_better"] else " ↓"
            metrics.setdefault((result["task"], key), f"{result['task']} {entry['label']}{arrow}")
            cells[result["model"], (result["task"], key)] = _cell(entry)
    if rows == "model":
        lines = ["| model | " + " | ".join(metrics.values()) + " |", "|---" * (len(metrics) + 1) + "|"]
        lines += [f"| {model} | " + " | ".join(cells.get((model, metric), "") for metric in metrics) + " |"
                  for model in models]
    else:
        lines = ["| metric | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
        lines += [f"| {label} | " + " | ".join(cells.get((model, metric), "") for model in models) + " |"
                  for metric, label in metrics.items()]
    counts = sorted({(result["task"], result["scored"]) for result in results})
    lines += ["", "Examples scored: " + ", ".join(f"{task} {count}" for task, count in counts) + "."]
    if any(result["random_networks"] for result in results):
        lines.append("(random net): tiny randomly initialised networks, a code-path check; not FID, CLIP score or "
                     "LPIPS, and not comparable with published numbers.")
    lines += [f"n/a: {result['task']} {entry['label']}: {entry['skipped']}." for result in results
              for entry in result["metrics"].values() if "skipped" in entry]
    if any(entry.get("forced") for result in results for entry in result["metrics"].values()):
        lines.append("*: forced below the metric's minimum sample count (--force); biased.")
    return "\n".join(lines)
