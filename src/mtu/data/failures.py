"""What a bad sample raises, and how unreadable samples are counted: `SampleError`, `DATA_ERRORS`, `FailureLog`,
`check_failure_rate`.

A sample that cannot be read (a missing or corrupt file, a metadata line that is not UTF-8 JSON, a tar member cut
short, a cell of the wrong type) is the user's data, not a bug: training skips it and counts it, `mtu data validate`
lists it, and a source with too many stops the run with one line naming the files. `DATA_ERRORS` holds only such
I/O and decoding errors; anything else raised while building an example (a TypeError, KeyError, IndexError) is a
bug in mtu and propagates with its traceback.
"""

from __future__ import annotations

import json
import struct
import tarfile
import zlib

import torch
from PIL import Image
from torch.utils.data import get_worker_info

from ..errors import InputError


class SampleError(InputError):
    """One sample (or one image file) of the user's data cannot be used; the message names the file or row."""


# OSError covers PIL's UnidentifiedImageError and truncated files; json.JSONDecodeError and UnicodeDecodeError are
# the ValueErrors of a corrupt metadata line. Decoders' own ValueError/SyntaxError become SampleError in `imaging`.
DATA_ERRORS = (SampleError, OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError, tarfile.TarError,
               zlib.error, struct.error, Image.DecompressionBombError)


class FailureLog:
    """Counts read attempts and failures of one dataset, including those made in DataLoader workers.

    Counters live in shared-memory tensors, one row per worker (row 0 for the main process), so that the copies
    of the dataset in worker processes write where the main process reads, without locks. Counts carried over
    from before a resume (`carry`) add to the totals, so `max_failure_fraction` holds over the whole run.

    Args:
        max_examples: Failures whose key and error are kept, per process.
        slots: Rows of the counters; worker ids beyond `slots - 1` share rows (counts may then race).
    """

    RECORD_BYTES = 512

    def __init__(self, max_examples: int = 10, slots: int = 65):
        self.max_examples = max_examples
        self._counts = torch.zeros(slots, 2, dtype=torch.int64).share_memory_()  # (slot, [attempts, failures])
        self._records = torch.zeros(slots, max_examples, self.RECORD_BYTES, dtype=torch.uint8).share_memory_()
        self._carried = (0, 0)  # (attempts, failures) before the resume; read in the main process only

    def _slot(self) -> int:
        info = get_worker_info()
        return 0 if info is None else 1 + info.id % (self._counts.shape[0] - 1)

    def attempt(self) -> None:
        self._counts[self._slot(), 0] += 1

    def record(self, key: str, error: BaseException) -> None:
        slot = self._slot()
        failures = int(self._counts[slot, 1])
        self._counts[slot, 1] += 1
        if failures < self.max_examples:
            text = json.dumps([key, f"{type(error).__name__}: {error}"])
            data = text.encode("utf-8")[: self.RECORD_BYTES - 1]
            self._records[slot, failures, : len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)

    def carry(self, failures: int, attempts: int) -> None:
        """Sets the counts of the run before a resume (from `DataFeed.state`), added to every total."""
        if not 0 <= failures <= attempts:
            raise InputError(f"carried failure counts must satisfy 0 <= failures <= attempts, got {failures} of "
                             f"{attempts}.", field="failures")
        self._carried = (int(attempts), int(failures))

    @property
    def attempts(self) -> int:
        return int(self._counts[:, 0].sum()) + self._carried[0]

    @property
    def count(self) -> int:
        return int(self._counts[:, 1].sum()) + self._carried[1]

    @property
    def examples(self) -> list[tuple[str, str]]:
        """(key, error message) of the first failures of each process since this log was made (not carried)."""
        found = []
        for slot in range(self._counts.shape[0]):
            for row in range(min(int(self._counts[slot, 1]), self.max_examples)):
                data = bytes(self._records[slot, row].tolist()).rstrip(b"\0").decode("utf-8", errors="ignore")
                try:
                    key, message = json.loads(data)
                except ValueError:  # cut at RECORD_BYTES: keep what is there
                    key, message = data[:80], data
                found.append((key, message))
        return found[: self.max_examples]

    @property
    def keys(self) -> list[str]:
        return [key for key, _ in self.examples]

    def reset(self) -> None:
        self._counts.zero_()
        self._records.zero_()
        self._carried = (0, 0)

    def __repr__(self) -> str:
        return f"FailureLog(count={self.count}, attempts={self.attempts}, keys={self.keys})"


def check_failure_rate(dataset, cfg=None, min_attempts: int = 20) -> float:
    """Raises `InputError` once unreadable samples exceed `cfg.max_failure_fraction` of at least `min_attempts`
    reads (those before a resume included).

    Args:
        dataset: An `ExampleDataset` (its `failures` log and `config`).
        cfg: The source config whose `max_failure_fraction` applies; None uses `dataset.config`.
        min_attempts: Reads before any verdict.

    Returns:
        The failure fraction so far (0.0 before any read).
    """
    cfg = cfg or dataset.config
    log = dataset.failures
    fraction = log.count / log.attempts if log.attempts else 0.0
    if log.attempts >= min_attempts and fraction > cfg.max_failure_fraction:
        listed = "; ".join(f"{key} ({message})" for key, message in log.examples) or "none since the resume"
        raise InputError(
            f"data source {cfg.path!r} (task {cfg.task!r}): {log.count} of {log.attempts} samples unreadable "
            f"({fraction:.1%} > max_failure_fraction={cfg.max_failure_fraction:g}); failing files: {listed}"
        )
    return fraction
