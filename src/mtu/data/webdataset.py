"""Random-access reader of WebDataset tar shards.

Why not the `webdataset` package: it streams (an `IterableDataset`), so a trainer cannot jump to sample i, and
exact resume by sampler position needs random access. Uncompressed tar members sit at fixed byte offsets, so
we index every member once at construction (one pass over the headers, no image decoding) and later read a
member with one seek.

Layout. Members are grouped into samples by key: the path up to the first dot of the file name
(`shard/000001.input.png` -> key `shard/000001`, suffix `input.png`). A member's suffix names its column:
    KEY.jpg / KEY.png / ...          -> column "image"
    KEY.NAME.png                     -> column "NAME"               (e.g. KEY.original_image.png, KEY.mask.png)
    KEY.NAME.0.png, KEY.NAME.1.png   -> column "NAME", a list in index order (several targets of one input)
    KEY.txt                          -> column "text" (UTF-8);  KEY.NAME.txt -> column "NAME"
    KEY.json                         -> one column per field of the JSON object (texts, lists of captions)
    any other suffix                 -> a column named by the whole suffix (raw bytes, unused by the schemas)
A member column wins over a JSON field of the same name. The per-schema layouts are in `mtu.data.schemas`.
"""

from __future__ import annotations

import glob
import json
import os
import re
import tarfile

from ..errors import InputError
from .failures import SampleError

IMAGE_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif"})
TEXT_EXTENSIONS = frozenset({"txt", "text"})
_BRACE = re.compile(r"\{([^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """Expands "{000..012}" numeric ranges (zero-padded like the first bound) and "{a,b}" alternatives."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    head, body, tail = pattern[:match.start()], match.group(1), pattern[match.end():]
    range_match = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if range_match:
        first, last = range_match.groups()
        options = [str(number).zfill(len(first)) for number in range(int(first), int(last) + 1)]
    else:
        options = body.split(",")
    return [expanded for option in options for expanded in expand_braces(head + option + tail)]


def expand_shards(path: str) -> list[str]:
    """The shard files of a folder (its *.tar), a glob, or a brace pattern, in order."""
    if os.path.isdir(path):
        shards = sorted(glob.glob(os.path.join(path, "*.tar")))
    else:
        shards = []
        for pattern in expand_braces(path):
            shards.extend(sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern])
        missing = [shard for shard in shards if not os.path.isfile(shard)]
        if missing:
            raise InputError(f"{path!r}: shard file(s) not found: {missing[:5]}.", field="path")
    if not shards:
        raise InputError(f"{path!r} matches no .tar shards.", field="path")
    return shards


def member_column(suffix: str) -> tuple[str | None, int | None, str]:
    """Maps a member suffix to (column, list position or None, kind), kind in image / text / json / bytes."""
    parts = suffix.split(".")
    extension = parts[-1].lower()
    names = parts[:-1]
    if extension in IMAGE_EXTENSIONS:
        position = None
        if names and names[-1].isdigit():
            position, names = int(names[-1]), names[:-1]
        return ".".join(names) or "image", position, "image"
    if extension in TEXT_EXTENSIONS:
        return ".".join(names) or "text", None, "text"
    if extension == "json" and not names:
        return None, None, "json"
    return suffix, None, "bytes"


_BLOCK = 512  # tar's block size: headers, and data padded to a multiple of it


def _end_of_archive(shard: str, offset: int, size: int) -> str | None:
    """None when a zero block (tar's end-of-archive marker) follows the last member at `offset`; else a problem."""
    with open(shard, "rb") as handle:
        handle.seek(offset)
        block = handle.read(_BLOCK)
    if len(block) == _BLOCK and not any(block):
        return None
    found = "the file ends there" if offset >= size else f"{size - offset} bytes of an incomplete header follow"
    return f"no end-of-archive block after byte {offset} ({found})"


def _index_shard(shard: str) -> tuple[dict[str, dict[str, tuple[int, int]]], list[str]]:
    """key -> {suffix: (byte offset, size)} for the regular files of one shard, in tar order, and the shard's
    problems: a shard cut short (a member truncated, or no end-of-archive block) silently loses the samples after
    the cut, so it is reported rather than read as complete."""
    samples: dict[str, dict[str, tuple[int, int]]] = {}
    problems, last, size = [], None, os.path.getsize(shard)
    try:
        with tarfile.open(shard, mode="r:") as archive:  # "r:": offsets are only meaningful uncompressed
            for member in archive:
                last = member.name
                if member.offset_data + member.size > size:
                    problems.append(f"member {member.name} is cut short ({max(0, size - member.offset_data)} of "
                                    f"{member.size} bytes)")
                folder, name = os.path.split(member.name)
                if not member.isfile() or name.startswith(".") or "." not in name:
                    continue
                stem, suffix = name.split(".", 1)
                key = f"{folder}/{stem}" if folder else stem
                samples.setdefault(key, {})[suffix] = (member.offset_data, member.size)
            end = archive.offset
    except tarfile.TarError as error:
        if last is None:
            raise InputError(f"cannot read shard {shard!r} as a tar file (uncompressed .tar shards only): {error}",
                             field="path") from error
        end = None
        if not problems:
            problems.append(f"unreadable after member {last}: {error}")
    if end is not None:
        missing_marker = _end_of_archive(shard, end, size)
        if missing_marker:
            problems.append(f"{missing_marker}: cut short after member {last}" if last else missing_marker)
    return samples, [f"shard {shard}: {problem}; samples after it are missing" for problem in problems]


class TarShardReader:
    """Samples of WebDataset tar shards, by index, in shard order then tar order.

    Args:
        path: A folder of .tar files, a glob, or a brace pattern such as "data/train-{0000..0099}.tar".
    """

    def __init__(self, path: str):
        self.shards = expand_shards(path)
        self.base_dir = None  # images are member bytes, never paths
        # One entry per (shard, key): the shard index, the key and its members' offsets.
        self._samples: list[tuple[int, str, dict[str, tuple[int, int]]]] = []
        self.problems: list[str] = []  # shards cut short: `mtu data validate` reports them, training refuses them
        member_columns: dict[str, None] = {}
        for shard_index, shard in enumerate(self.shards):
            samples, problems = _index_shard(shard)
            self.problems.extend(problems)
            for key, members in samples.items():
                self._samples.append((shard_index, key, members))
                for suffix in members:
                    column, _, kind = member_column(suffix)
                    if kind != "json":
                        member_columns[column] = None
        if not self._samples:
            raise InputError(f"{path!r}: the shards hold no samples.", field="path")
        self.columns = list(member_columns) + [name for name in self._first_json_fields() if name not in
                                               member_columns]

    def _first_json_fields(self) -> list[str]:
        for index, (_, _, members) in enumerate(self._samples):
            if "json" in members:
                try:
                    return list(self._json(index))
                except SampleError:
                    continue  # a corrupt JSON is one sample's failure; look at the next sample
        return []

    def __len__(self) -> int:
        return len(self._samples)

    def _member(self, index: int, suffix: str) -> str:
        shard_index, key, _ = self._samples[index]
        return f"member {key}.{suffix} of {self.shards[shard_index]}"

    def _bytes(self, index: int, suffix: str) -> bytes:
        shard_index, key, members = self._samples[index]
        offset, size = members[suffix]
        # Open per read: nothing to close, nothing shared between DataLoader workers, and cheap next to decoding.
        with open(self.shards[shard_index], "rb") as handle:
            handle.seek(offset)
            data = handle.read(size)
        if len(data) != size:
            raise SampleError(f"{self._member(index, suffix)} is cut short: {len(data)} of {size} bytes")
        return data

    def _text(self, index: int, suffix: str) -> str:
        try:
            return self._bytes(index, suffix).decode("utf-8")
        except UnicodeDecodeError as error:
            raise SampleError(f"{self._member(index, suffix)}: not UTF-8 ({error.reason} at byte {error.start})") \
                from None

    def _json(self, index: int) -> dict:
        try:
            fields = json.loads(self._text(index, "json"))
        except json.JSONDecodeError as error:
            raise SampleError(f"{self._member(index, 'json')}: not JSON ({error.msg} at line {error.lineno} "
                              f"column {error.colno})") from None
        if not isinstance(fields, dict):
            raise SampleError(f"{self._member(index, 'json')}: not a JSON object, got {type(fields).__name__}")
        return fields

    def read(self, index: int, columns: list[str]) -> dict:
        _, _, members = self._samples[index]
        values: dict = {}
        listed: dict[str, list[tuple[int, bytes]]] = {}
        for suffix in members:
            column, position, kind = member_column(suffix)
            if kind == "json" or column not in columns:
                continue
            value = self._text(index, suffix).strip() if kind == "text" else self._bytes(index, suffix)
            if position is None:
                values[column] = value
            else:
                listed.setdefault(column, []).append((position, value))
        for column, items in listed.items():
            values.setdefault(column, [value for _, value in sorted(items)])
        if "json" in members and any(column not in values for column in columns):
            fields = self._json(index)
            values.update({column: fields[column] for column in columns if column not in values and column in fields})
        return values

    def contents(self, index: int) -> str:
        """What sample `index` holds, for messages about a missing column."""
        _, key, members = self._samples[index]
        return f"its members: {', '.join(f'{key}.{suffix}' for suffix in members)}"

    def key(self, index: int, key_column: str | None = None) -> str:
        shard_index, key, _ = self._samples[index]
        return f"{os.path.basename(self.shards[shard_index])}/{key}"
