"""Intent accuracy of `mtu chat`'s router (`mtu.chat.route`) on the labelled requests.

    python benchmarks/chat_intent.py [--show-wrong]

tests/data/chat_intents.tsv: 183 requests (typos, capitals, polite and terse forms, ambiguous ones, with and without
an image), each labelled with the task `mtu chat` should run; written before the rules, then split by a hash of the
text into `dev` (the rules were tuned on it) and `heldout` (not looked at while tuning). tests/data/
chat_intents_fresh.tsv: 40 requests written after the first rules, in wordings they were not written for (they read
0.70 of them); the rules were then generalised (word families by stem, `a|b` alternatives, `*` gaps, removal
patterns) with these in view, so they are a development set now, no longer an estimate for unseen wording. tests/data/chat_intents_blind.tsv: 100
requests (25 per task) written by someone who never saw the rules or the other sets, measured once after the rules
were generalised (98/100): the estimate for unseen wording; tuning on it from now on would make it one more
development set. Prints
one row per set and per labelled task, and the mean time to route one request.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import defaultdict
from pathlib import Path

from mtu.chat import route

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
SETS = {"labelled": DATA / "chat_intents.tsv", "fresh": DATA / "chat_intents_fresh.tsv",
        "blind": DATA / "chat_intents_blind.tsv"}


def read(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show-wrong", action="store_true", help="list every request routed wrongly")
    args = parser.parse_args()
    counts = defaultdict(lambda: [0, 0])  # row name -> [right, total]
    wrong, seconds, routed_count = [], 0.0, 0
    for name, path in SETS.items():
        for row in read(path):
            started = time.perf_counter()
            routed = route(row["text"], row["image"] == "1").task
            seconds, routed_count = seconds + time.perf_counter() - started, routed_count + 1
            right = routed == row["task"]
            keys = [name, f"{name}: {row['split']}"] if "split" in row else [name]
            keys.append(f"{name}: {row['task']}")
            for key in keys:
                counts[key][0] += right
                counts[key][1] += 1
            if not right:
                wrong.append(f"{name}: {row['text']!r} (image: {row['image']}) labelled {row['task']}, routed {routed}")
    print("| set | requests | right | accuracy |\n|---|---:|---:|---:|")
    for key, (right, total) in counts.items():
        print(f"| {key} | {total} | {right} | {right / total:.3f} |")
    print(f"\nmean routing time: {seconds / routed_count * 1000:.2f} ms per request (the first loads the task plug-ins)")
    if args.show_wrong:
        print("\n".join(wrong))


if __name__ == "__main__":
    main()
