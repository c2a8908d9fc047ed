"""The words the shipped toy-world model was trained on, so that a reply can say which words of a prompt it has never
seen ("dog": the toy world knows circles, squares and triangles). Read from the toy world's own generators (captions,
partial captions, edit and removal instructions of seeded scenes), never listed by hand."""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

SCENES = 400  # seeded scenes whose texts are read; every word of the toy world's small grammar occurs in them
SEED = 0
WORD = re.compile(r"[a-z]+")


@lru_cache(maxsize=1)
def toy_vocabulary() -> frozenset[str]:
    """Every word of the toy world's captions and instructions."""
    from ..toyworld.scene import caption, make_scenes, partial_caption
    from ..toyworld.tasks import EDIT_KINDS, sample_edit

    rng = np.random.default_rng(SEED)
    texts = []
    for scene in make_scenes(SEED, SCENES):
        texts += [caption(scene), partial_caption(scene, rng)]
        texts += [sample_edit(scene, rng, kinds=(kind,)).instruction for kind in EDIT_KINDS
                  if _applies(scene, kind)]
    return frozenset(word for text in texts for word in WORD.findall(text.lower()))


def _applies(scene, kind: str) -> bool:
    from ..toyworld.tasks import possible_edits

    return kind in possible_edits(scene)


def unknown_words(prompt: str | None) -> list[str]:
    """The words of `prompt` the toy-world model never saw, in order, each once."""
    if not prompt:
        return []
    known = toy_vocabulary()
    seen = []
    for word in WORD.findall(prompt.lower()):
        if word not in known and word not in seen:
            seen.append(word)
    return seen
