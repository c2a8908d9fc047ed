"""The words of a request and of the tasks' intent phrases, reduced to comparable forms (`stem`), and where a phrase
occurs in a request (`find`).

A phrase (`mtu.tasks.Intents.phrases`) is a sequence of slots: a word, `a|b|c` (any of those words), or `*` (zero to
four words of any kind). Words are compared by `stem`, so one phrase word stands for its inflections: "sharp" finds
"sharper", "sharpest", "sharpness" and "sharply"; "blur" finds "blurry", "blurred" and "blurriness"; "remove" finds
"removed" and "removing". A multiplier ("3x", "x4") reads as `2x`, a "4k"-style size as `4k`.
"""

from __future__ import annotations

import re
from functools import lru_cache

MAX_GAP = 4  # words a `*` stands for, at most
# Suffixes stripped, longest first, while at least MIN_STEM letters remain; repeated until none applies
# ("sharpeners" -> "sharpener" -> "sharpen", "blurriness" -> "blurr" -> "blur").
SUFFIXES = ("iness", "ness", "ings", "ing", "ied", "ies", "est", "ed", "er", "ly", "es", "s", "y", "e")
MIN_STEM = 3
# Nouns for the image itself that are not the verb they come from ("make the drawing blue" is no request to draw).
NOT_STEMMED = frozenset(("drawing", "drawings", "painting", "paintings"))
NUMBER_FORMS = ((re.compile(r"^(?:\d+x|x\d+)$"), "2x"), (re.compile(r"^\d+k$"), "4k"),
                (re.compile(r"^\d{3,4}p$"), "1080p"))


@lru_cache(maxsize=4096)
def stem(word: str) -> str:
    """The comparable form of a lower-case `word`: inflections stripped ("removing" -> "remov"), kept whole when the
    stem would be shorter than three letters ("red", "used"), a doubled final consonant undoubled ("blurr" ->
    "blur", "bigg" -> "big"; "fuzz" and "small" keep theirs)."""
    for pattern, form in NUMBER_FORMS:
        if pattern.match(word):
            return form
    if word.endswith("'s") and len(word) - 2 >= MIN_STEM:
        word = word[:-2]
    if word in NOT_STEMMED or not word.isalpha():
        return word
    changed = True
    while changed:
        changed = False
        for suffix in SUFFIXES:
            rest = word[:-len(suffix)]
            # "s" after s, u or i is no plural ("class", "bus", "this").
            if word.endswith(suffix) and len(rest) >= MIN_STEM and not (suffix == "s" and rest[-1] in "sui"):
                word, changed = rest, True
                break
        if len(word) > MIN_STEM and word[-1] == word[-2] and word[-1] not in "lsz":
            word, changed = word[:-1], True
    return word


@lru_cache(maxsize=1024)
def compile_phrase(phrase: str) -> tuple[frozenset[str] | None, ...]:
    """`phrase`'s slots: the stems each word slot accepts, None for a `*` gap."""
    return tuple(None if part == "*" else frozenset(stem(word) for word in part.split("|"))
                 for part in phrase.split())


def phrase_words(phrase: str) -> list[str]:
    """The words `phrase` names, its `|` alternatives included and its `*` gaps not."""
    return [word for part in phrase.split() if part != "*" for word in part.split("|")]


def find(stems: list[str], phrase: str) -> list[tuple[int, ...]]:
    """The indices of the request's words (given as `stems`) that each occurrence of `phrase` covers (its gaps not
    included), one occurrence per start: the shortest."""
    slots = compile_phrase(phrase)
    found = []

    def extend(position: int, slot: int, covered: tuple[int, ...]) -> tuple[int, ...] | None:
        if slot == len(slots):
            return covered
        if slots[slot] is None:
            for gap in range(MAX_GAP + 1):
                result = extend(position + gap, slot + 1, covered)
                if result is not None:
                    return result
            return None
        if position < len(stems) and stems[position] in slots[slot]:
            return extend(position + 1, slot + 1, covered + (position,))
        return None

    first = slots[0]
    for start, word in enumerate(stems):
        if first is None or word in first:
            covered = extend(start, 0, ())
            if covered:
                found.append(covered)
    return found


def one_edit_apart(typed: str, word: str) -> bool:
    """Whether `typed` becomes `word` by one added, dropped or changed letter, or two neighbours swapped."""
    if typed == word or abs(len(typed) - len(word)) > 1:
        return False
    if len(typed) == len(word):
        diffs = [i for i, (a, b) in enumerate(zip(typed, word)) if a != b]
        return len(diffs) == 1 or (len(diffs) == 2 and diffs[1] == diffs[0] + 1
                                   and typed[diffs[0]] == word[diffs[1]] and typed[diffs[1]] == word[diffs[0]])
    short, long = (typed, word) if len(typed) < len(word) else (word, typed)
    return any(long[:i] + long[i + 1:] == short for i in range(len(long)))
