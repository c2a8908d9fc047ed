"""Checking a data source of any format before training: read every sample (or the first few) exactly as training
would, list what failed, and summarize what was found."""

from __future__ import annotations

from ..errors import InputError
from .dataset import DATA_ERRORS, ExampleDataset, build_dataset

MAX_LISTED_FAILURES = 10
# Report entries every format has, and those of the file formats that `format_validation` writes in its own way;
# any other entry (a plug-in format's `describe()`) is printed as "key: value".
_GENERIC_KEYS = frozenset({
    "source", "format", "schema", "task", "num_samples", "num_checked", "num_readable", "num_failed",
    "failure_fraction", "max_failure_fraction", "problems", "ok", "failures", "optional_fields", "image_sizes",
    "text_lengths", "columns", "available_columns", "webdataset_layout"})


def _update_image_stats(stats: dict, role: str, size: tuple[int, int]) -> None:
    width, height = size
    entry = stats.setdefault(role, {"min_width": width, "max_width": width, "min_height": height,
                                    "max_height": height})
    entry["min_width"], entry["max_width"] = min(entry["min_width"], width), max(entry["max_width"], width)
    entry["min_height"], entry["max_height"] = min(entry["min_height"], height), max(entry["max_height"], height)


def _update_text_stats(stats: dict, role: str, text: str) -> None:
    entry = stats.setdefault(role, {"min": len(text), "max": len(text), "total": 0, "count": 0})
    entry["min"], entry["max"] = min(entry["min"], len(text)), max(entry["max"], len(text))
    entry["total"] += len(text)
    entry["count"] += 1


def _scan(dataset, checked: int) -> dict:
    """Reads the first `checked` samples exactly as training would (fields, then the example)."""
    optional = [spec.role for spec in dataset.schema.columns if not spec.required]
    scan = {"readable": 0, "failures": [], "present": dict.fromkeys(optional, 0), "image_sizes": {},
            "text_lengths": {}}
    for index in range(checked):
        try:
            fields, generator = dataset.load_fields(index, dataset.epoch)
            for role, value in fields.items():
                if isinstance(value, str):
                    _update_text_stats(scan["text_lengths"], role, value)
                else:
                    _update_image_stats(scan["image_sizes"], role, value.size)
            dataset.build(index, fields, generator)
        except DATA_ERRORS as error:
            scan["failures"].append({"key": dataset.key(index), "error": f"{type(error).__name__}: {error}"})
            continue
        scan["readable"] += 1
        for role in optional:
            scan["present"][role] += role in fields
    for entry in scan["text_lengths"].values():
        entry["mean"] = entry.pop("total") / max(1, entry.pop("count"))
    return scan


def validate_source(cfg, limit: int | None = None) -> dict:
    """Opens a source of any registered format and reads its samples exactly as training would.

    Args:
        cfg: The source: a config of any format (`DataSourceConfig`, `ToyWorldConfig`, ...) or its dict.
        limit: Read only the first `limit` samples; None reads all.

    Returns:
        A report dict: "source", "format", "schema", "task", "num_samples", "num_checked", "num_readable",
        "num_failed", "failure_fraction", "max_failure_fraction", "problems" (defects of the source as a whole, e.g.
        a tar shard cut short), "ok" (no problems and failures within the limit), "failures" (first 10 {"key",
        "error"}), "optional_fields" (role -> samples having it), "image_sizes" (role -> min/max width/height before
        resizing), "text_lengths" (role -> min/max/mean characters), and the format's own entries (file formats:
        "columns" role -> column, "available_columns", "webdataset_layout").

    Raises:
        InputError: for a bad config or a missing column, before any sample is read.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InputError(f"must be None or an integer >= 0, got {limit!r}.", field="limit")
    dataset: ExampleDataset = build_dataset(cfg)
    cfg = dataset.config
    checked = len(dataset) if limit is None else min(limit, len(dataset))
    scan = _scan(dataset, checked)
    failures, problems = scan["failures"], list(dataset.problems)
    fraction = len(failures) / checked if checked else 0.0
    return {
        "source": cfg.path, "format": cfg.format, "schema": dataset.schema.name, "task": cfg.task,
        "num_samples": len(dataset), "num_checked": checked, "num_readable": scan["readable"],
        "num_failed": len(failures),
        "failure_fraction": fraction, "max_failure_fraction": cfg.max_failure_fraction, "problems": problems,
        "ok": fraction <= cfg.max_failure_fraction and not problems,
        "failures": failures[:MAX_LISTED_FAILURES],
        "optional_fields": scan["present"], "image_sizes": scan["image_sizes"], "text_lengths": scan["text_lengths"],
        **dataset.describe(),
    }


def format_validation(report: dict) -> str:
    """A readable multi-line summary of a `validate_source` report."""
    verdict = "OK" if report["ok"] else "SOURCE DEFECTIVE" if report["problems"] else "TOO MANY FAILURES"
    lines = [
        f"source: {report['source']} (format {report['format']}, schema {report['schema']}, task {report['task']})",
        f"samples: {report['num_samples']}, checked {report['num_checked']}, readable {report['num_readable']}, "
        f"failed {report['num_failed']} ({report['failure_fraction']:.1%}; allowed "
        f"{report['max_failure_fraction']:.1%}) -> {verdict}",
    ]
    lines.extend(f"problem: {problem}" for problem in report["problems"])
    if report.get("columns") is not None:
        lines.append("columns: " + ", ".join(f"{role} <- {column!r}" for role, column in report["columns"].items()))
    if report.get("available_columns") is not None:
        lines.append(f"available columns: {', '.join(map(str, report['available_columns']))}")
    lines.extend(f"{key}: {value}" for key, value in report.items() if key not in _GENERIC_KEYS)
    if report.get("webdataset_layout"):
        lines.append(f"expected shard layout: {report['webdataset_layout']}")
    for role, stats in report["image_sizes"].items():
        lines.append(f"image {role}: width {stats['min_width']}-{stats['max_width']}, "
                     f"height {stats['min_height']}-{stats['max_height']}")
    for role, stats in report["text_lengths"].items():
        lines.append(f"text {role}: {stats['min']}-{stats['max']} characters (mean {stats['mean']:.1f})")
    if report["optional_fields"]:
        lines.append("optional fields: " + ", ".join(
            f"{role} in {count}/{report['num_readable']}" for role, count in report["optional_fields"].items()))
    if report["failures"]:
        lines.append(f"failures (first {len(report['failures'])} of {report['num_failed']}):")
        lines.extend(f"  {item['key']}: {item['error']}" for item in report["failures"])
    return "\n".join(lines)
