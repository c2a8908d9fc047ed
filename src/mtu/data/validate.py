"""Checking a data source before training: read every sample (or the first few) and summarize what was found."""

from __future__ import annotations

from .config import DataSourceConfig
from .dataset import DATA_ERRORS, build_dataset

MAX_LISTED_FAILURES = 10


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
            fields, generator = dataset.load_fields(index)
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


def validate_source(cfg: DataSourceConfig, limit: int | None = None) -> dict:
    """Opens a source and reads its samples exactly as training would, collecting statistics.

    Args:
        cfg: The source (a `DataSourceConfig` or its dict).
        limit: Read only the first `limit` samples; None reads all.

    Returns:
        A report dict: "source", "format", "schema", "task", "num_samples", "num_checked", "num_readable",
        "num_failed", "failure_fraction", "max_failure_fraction", "ok", "failures" (first 10 {"key", "error"}),
        "columns" (role -> column), "available_columns", "optional_fields" (role -> samples having it),
        "image_sizes" (role -> min/max width/height before resizing), "text_lengths" (role -> min/max/mean
        characters), "webdataset_layout" (the expected member names, for "webdataset").

    Raises:
        ValueError: for a bad config or a missing column, before any sample is read.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"`limit` must be None or an integer >= 0, got {limit!r}.")
    dataset = build_dataset(cfg)
    cfg = dataset.config
    checked = len(dataset) if limit is None else min(limit, len(dataset))
    scan = _scan(dataset, checked)
    failures = scan["failures"]
    fraction = len(failures) / checked if checked else 0.0
    return {
        "source": cfg.path, "format": cfg.format, "schema": cfg.schema, "task": cfg.task,
        "num_samples": len(dataset), "num_checked": checked, "num_readable": scan["readable"],
        "num_failed": len(failures),
        "failure_fraction": fraction, "max_failure_fraction": cfg.max_failure_fraction,
        "ok": fraction <= cfg.max_failure_fraction,
        "failures": failures[:MAX_LISTED_FAILURES],
        "columns": dict(dataset.column_map), "available_columns": list(dataset.reader.columns),
        "optional_fields": scan["present"], "image_sizes": scan["image_sizes"], "text_lengths": scan["text_lengths"],
        "webdataset_layout": dataset.schema.webdataset_layout if cfg.format == "webdataset" else None,
    }


def format_validation(report: dict) -> str:
    """A readable multi-line summary of a `validate_source` report."""
    lines = [
        f"source: {report['source']} (format {report['format']}, schema {report['schema']}, task {report['task']})",
        f"samples: {report['num_samples']}, checked {report['num_checked']}, readable {report['num_readable']}, "
        f"failed {report['num_failed']} ({report['failure_fraction']:.1%}; allowed "
        f"{report['max_failure_fraction']:.1%}) -> {'OK' if report['ok'] else 'TOO MANY FAILURES'}",
        "columns: " + ", ".join(f"{role} <- {column!r}" for role, column in report["columns"].items()),
        f"available columns: {', '.join(map(str, report['available_columns']))}",
    ]
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
