"""Builders of tiny real data sources (folder, hf, webdataset) for the data tests; holds no tests itself.

A *record* is one sample as a dict column -> value, where a value is a PIL image, a list of PIL images, a string or
a list of strings. The writers turn a list of records into each on-disk format with the layouts the readers
document, so one set of records checks every format.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (32, 24)  # (width, height) of every test image
CORRUPT = b"this is not an image"


def make_image(seed: int, size: tuple[int, int] = SIZE) -> Image.Image:
    """A seeded RGB image with smooth structure plus texture, so resizing and degradation are measurable."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(0.2, 0.8, 3)[None, None] + 0.2 * np.sin(x / 3.0 + seed)[..., None] * np.cos(y / 4.0)[..., None]
    texture = rng.uniform(-0.1, 0.1, (height, width, 3))
    return Image.fromarray((np.clip(base + texture, 0, 1) * 255).astype(np.uint8))


def make_mask(size: tuple[int, int] = SIZE) -> Image.Image:
    """White (fill) on the left half, black on the right half."""
    array = np.zeros((size[1], size[0]), dtype=np.uint8)
    array[:, : size[0] // 2] = 255
    return Image.fromarray(array, mode="L")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def records_for(schema: str, count: int = 3) -> list[dict]:
    """`count` records in the default column names of `schema`."""
    records = []
    for index in range(count):
        image = make_image(index)
        record = {
            "coco_captions": {"image": image, "captions": [f"caption {index}-{j}" for j in range(5)]},
            "instructpix2pix": {"original_image": image, "edited_image": make_image(100 + index),
                                "edit_prompt": f"make it red {index}", "input_caption": f"a photo {index}",
                                "output_caption": f"a red photo {index}"},
            "gqa_inpaint": {"source_image": image, "target_image": make_image(200 + index),
                            "instruction": f"remove the cat {index}"},
            "mask_inpaint": {"image": image, "mask": make_mask(), "prompt": f"a dog {index}"},
            "sr_highres": {"image": image},
            "captions": {"image": image, "text": f"text {index}"},
        }[schema]
        records.append(record)
    return records


def _is_image(value) -> bool:
    return isinstance(value, (Image.Image, bytes))


def _encode(value) -> bytes:
    return value if isinstance(value, bytes) else png_bytes(value)


def write_folder(root: Path, records: list[dict]) -> Path:
    """A folder source: images as PNG files (bytes values written as-is, e.g. `CORRUPT`), metadata.jsonl."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "metadata.jsonl", "w") as handle:
        for index, record in enumerate(records):
            row = {}
            for column, value in record.items():
                if _is_image(value) or (isinstance(value, list) and value and _is_image(value[0])):
                    items = value if isinstance(value, list) else [value]
                    paths = []
                    for position, item in enumerate(items):
                        path = f"images/{index:03d}_{column}_{position}.png"
                        (root / path).parent.mkdir(exist_ok=True)
                        (root / path).write_bytes(_encode(item))
                        paths.append(path)
                    row[column] = paths if isinstance(value, list) else paths[0]
                else:
                    row[column] = value
            handle.write(json.dumps(row) + "\n")
    return root


def write_hf(root: Path, records: list[dict], kind: str = "disk") -> Path:
    """An hf source: "disk" is `save_to_disk` with `datasets.Image` features, "parquet" stores PNG bytes."""
    import datasets

    if kind == "disk":
        datasets.Dataset.from_list(records).save_to_disk(str(root))
        return root
    rows = [{column: ([_encode(item) for item in value] if isinstance(value, list) and _is_image(value[0])
                      else _encode(value) if _is_image(value) else value) for column, value in record.items()}
            for record in records]
    root.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows).to_parquet(str(root / "part-00000.parquet"))
    return root


def _add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def write_webdataset(root: Path, records: list[dict], per_shard: int = 2) -> Path:
    """Shards `root/shard-000000.tar`, ... in the layout of `mtu.data.webdataset`: column "image" -> KEY.png,
    another image column NAME -> KEY.NAME.png (a list -> KEY.NAME.0.png, ...), texts -> KEY.json."""
    root.mkdir(parents=True, exist_ok=True)
    for shard_index, start in enumerate(range(0, len(records), per_shard)):
        with tarfile.open(root / f"shard-{shard_index:06d}.tar", "w") as archive:
            for index in range(start, min(start + per_shard, len(records))):
                key, texts = f"{index:06d}", {}
                for column, value in records[index].items():
                    stem = key if column == "image" else f"{key}.{column}"
                    if _is_image(value):
                        _add_member(archive, f"{stem}.png", _encode(value))
                    elif isinstance(value, list) and value and _is_image(value[0]):
                        for position, item in enumerate(value):
                            _add_member(archive, f"{stem}.{position}.png", _encode(item))
                    else:
                        texts[column] = value
                if texts:
                    _add_member(archive, f"{key}.json", json.dumps(texts).encode())
    return root


def write_source(root: Path, fmt: str, records: list[dict]) -> Path:
    """Writes `records` in format `fmt`: "folder", "hf" (save_to_disk), "hf_parquet" or "webdataset"."""
    if fmt == "folder":
        return write_folder(root, records)
    if fmt == "hf":
        return write_hf(root, records, "disk")
    if fmt == "hf_parquet":
        return write_hf(root, records, "parquet")
    if fmt == "webdataset":
        return write_webdataset(root, records)
    raise ValueError(f"unknown test format {fmt!r}")
