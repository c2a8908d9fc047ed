"""How a command shows its long steps on stderr; shared by the CLI, the demo and the self-check (which the CLI
imports, never the other way)."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager


@contextmanager
def step(message: str):
    """Shows a long step as it starts and how long it took."""
    print(f"{message} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    yield
    print(f"{message}: done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
