"""Intent routing: a chat request in plain words -> the task to run and the prompt to pass on (`route`).

Offline and deterministic rules over the intent phrases each task plug-in declares (`mtu.tasks.Intents`), so a user's
own task is asked for like a built-in one:

1. `/name rest` names a task outright (any registered task; `rest` is the prompt).
2. The request is split into lower-case words, each compared by its stem (`phrases.stem`: "sharpness" is "sharp",
   "removed" is "remove"). A word that is no known word and is one letter away (a letter added, dropped, or two
   swapped; changed, in words of five letters or more) from one word of the phrases (or from words of one task) is
   read as that word where that completes a task's phrase ("remvoe the square" -> "remove the square"; "draw a
   fox" keeps its fox).
3. Every task's phrases are looked for (`phrases.find`: `a|b` alternatives, `*` gaps). A phrase found inside a
   longer phrase of another task is part of that one ("remove the blur": sr's "remove * blur", not inpaint's
   "remove"). Without an image, a task that needs none wins if any of its phrases is found ("a high-resolution
   picture of a circle" is drawn). Then the highest `Intents.priority` wins (the most specific request: "make it
   sharper" is sr, not the edit "make it ..."), then the longest phrase, then the earliest.
4. A request without an image that reads as a description ("a sharp red triangle": it starts, after its framing,
   with an article or a number) is drawn (t2i). No phrase found: with an image it is an edit instruction unless it
   reads as a description; without one it is drawn.

The prompt passed on is the request without its politeness and framing ("please", "could you", "let's try") and, as
the winning task's `Intents.verb` says, kept as typed (edit), or the description the phrases introduce ("drop": "let's
start fresh with a yellow triangle" -> "a yellow triangle"), or the task's own verb put before the object the request
names ("remove": "i want the circle gone" -> "remove the circle", the wording the toy model was trained on).
`benchmarks/chat_intent.py` measures the accuracy on the labelled requests in tests/data/chat_intents*.tsv.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ..errors import InputError
from ..tasks import task_plugin
from ..upcycling.tasks import available_tasks, get_task
from .phrases import compile_phrase, find, one_edit_apart, phrase_words, stem

# What a request without any task phrase runs, by whether an image is attached (rule 4).
FALLBACK_TASKS = {False: "t2i", True: "edit"}
# Words and phrases of politeness and framing, removed from the prompt passed on (never deciding the task).
FRAMING = ("please", "pls", "plz", "kindly", "hey", "hi", "hello", "ok", "okay", "thanks", "thank you", "thx",
           "can you", "could you", "would you", "will you", "can u", "could u", "i want you to", "i'd like you to",
           "i would like you to", "i'd like", "i would like", "i want", "i need", "i'd love", "for me", "now", "also",
           "just", "a bit", "this time", "then", "let's", "lets", "let us", "let's try", "lets try", "try",
           "how about", "what about", "can i get", "could i get", "can i have", "could i have", "go ahead and",
           "i'd love to see", "i'd like to see", "i want to see", "let me see", "can i see")
LEADING_JOINERS = ("and", "so", "but", "then", "with", "of", "showing", "featuring", "containing", "where", "is")
# Common words never read as typos of a task's words ("more" is not "move", "had" is not "hd", "done" not "gone").
COMMON_WORDS = frozenset("""a an the it its it's this that these those them they i i'd i'm me my you your u we us our
    is are be was were been am do does did don't doesn't not no yes and or but so if then than to of in on at by for
    with from into onto over under up down out off as very too more most less some any all every each other another
    one two three both just now also only again still there here what which who how why when where can could would
    should will shall may might must have has had get got make made let look looks like want need see seen new old
    big bigger small smaller large larger little bit lot same else everything something nothing fix tell use using
    way good nice please thanks thank maybe image picture photo drawing version area region object side corner
    left right top bottom center centre middle background red green blue yellow purple white black gray grey orange
    pink brown circle circles square squares triangle triangles shape shapes dog cat sky sea sun tree house done
    none rest best cone wide close closer blu reds rain plane plate row raw loose ease print shark harp zoo lip
    insect darker lighter brighter whole""".split())
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
DESCRIPTION_STARTS = frozenset("a an one two three four five six some several".split())
# The words an object named for removal starts at ("erase everything except the circle" keeps "everything ...").
DETERMINERS = frozenset("the a an this that these those all every each both everything it them its my".split())
# Words that end the object a removal names ("the square [shouldn't be there]", "the circle [that is red]").
OBJECT_ENDS = frozenset("""is are was were be been isn't aren't should shouldn't must has have had needs need can
    could will would does doesn't don't do to looks look seems that which who""".split())
PRONOUNS = frozenset(("it", "this", "that", "them", "these", "those", "one"))
# Where a removed object is, said after it, which the toy model's "remove the X" never says.
TRAILING_FILLER = re.compile(r"(?:\s+(?:anymore|any more|entirely|completely|altogether|as well|too|instead))+$")
TRAILING_PLACE = re.compile(r"(?:\s+(?:(?:out\s+)?(?:of|from|in|on|off)\s+)?(?:the\s+|this\s+|that\s+|my\s+)?"
                            r"(?:picture|image|photo|pic|scene|drawing|canvas|frame|there|here))+$")
CLAUSE_END = frozenset(",;.!?:")


@dataclass(frozen=True)
class Route:
    """What `route` decided.

    Args:
        task: The task to run.
        prompt: The prompt to pass on (the instruction for edit and inpaint); None for a task without a prompt (sr).
        needs_image: Whether the task needs an input image.
        reason: Why, in words, for the reply ("'remove' asks for inpaint").
        corrections: (typed, read as) for every word read as a typo.
    """

    task: str
    prompt: str | None
    needs_image: bool
    reason: str
    corrections: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _Match:
    task: str
    priority: int
    length: int  # words of the phrase, the gap not counted
    start: int
    words: tuple[int, ...]  # indices of the request's words it covers
    phrase: str


def _tokens(text: str) -> list[tuple[str, int, int]]:
    """(word, start, end) of every word of the lower-cased `text`."""
    return [(match.group(), match.start(), match.end()) for match in WORD.finditer(text)]


def _intents() -> dict[str, object]:
    """{task: Intents} of the registered tasks that declare them."""
    found = {}
    for name in available_tasks():
        intents = task_plugin(name).intents
        if intents is not None:
            found[name] = intents
    return found


def _typo_of(typed: str, word: str) -> bool:
    """Whether `typed` reads as a typo of `word`: one edit apart; a changed letter only in words of five letters
    or more (a short word with one letter changed is most often another word: "cone", "wide")."""
    return one_edit_apart(typed, word) and (len(typed) >= 5 or len(typed) != len(word) or sorted(typed) == sorted(word))


@lru_cache(maxsize=8)
def _vocabulary(intents: tuple) -> tuple[dict[str, set[str]], frozenset[str], frozenset[str]]:
    """For the ((task, Intents), ...) registered: {phrase word: its tasks}, the phrase words' stems, and the words
    never read as typos."""
    tasks_of = {}
    for task, hints in intents:
        for phrase in hints.phrases:
            for word in phrase_words(phrase):
                tasks_of.setdefault(word, set()).add(task)
    known = COMMON_WORDS | {w for p in FRAMING for w in p.split()}
    return tasks_of, frozenset(stem(word) for word in tasks_of), known


def _correct(words: list[str], intents: dict) -> tuple[list[str], dict[int, str]]:
    """`words` with each unknown word that is a typo of one phrase word, or of words of one task only ("sharpn":
    "sharp", "sharpen"), read as that word (the longest); and {index: word as typed} of those read."""
    tasks_of, known_stems, known = _vocabulary(tuple(intents.items()))
    fixed, typed = [], {}
    for index, word in enumerate(words):
        candidates = [] if (word in known or stem(word) in known_stems or len(word) < 3
                            or not word.isalpha()) else [w for w in tasks_of if len(w) >= 3
                                                         and w.isalpha() and _typo_of(word, w)]
        swapped = [w for w in DETERMINERS if len(w) >= 3 and sorted(w) == sorted(word) and one_edit_apart(word, w)]
        if candidates and set.intersection(*(tasks_of[w] for w in candidates)):
            typed[index] = word
            word = max(candidates, key=lambda w: (len(w), w))
        elif swapped and word not in known:  # "teh" -> "the", read wherever it is
            typed[index] = word
            word = swapped[0]
        fixed.append(word)
    return fixed, typed


def _matches(stems: list[str], intents: dict) -> list[_Match]:
    present = set(stems)
    return [_Match(task, hints.priority, len(covered), covered[0], covered, phrase)
            for task, hints in intents.items() for phrase in hints.phrases
            if compile_phrase(phrase)[0] is None or compile_phrase(phrase)[0] & present
            for covered in find(stems, phrase)]


def _choose(matches: list[_Match], has_image: bool) -> _Match:
    """The match that decides the task (rule 3)."""
    inside = [m for m in matches if any(o.task != m.task and set(m.words) < set(o.words) for o in matches)]
    kept = [m for m in matches if m not in inside]
    if not has_image:
        runnable = [m for m in kept if not get_task(m.task).image_inputs]
        kept = runnable or kept
    return max(kept, key=lambda m: (m.priority, m.length, -m.start))


def _framing(stems: list[str]) -> set[int]:
    """Indices of the politeness and framing words, and of joiners left leading ("and the square red")."""
    drop = set()
    for phrase in FRAMING:
        for covered in find(stems, phrase):
            drop.update(covered)
    first = next((i for i in range(len(stems)) if i not in drop), None)
    while first is not None and stems[first] in LEADING_JOINERS[:4]:
        drop.add(first)
        first = next((i for i in range(first + 1, len(stems)) if i not in drop), None)
    return drop


def _described(words: list[str], framing: set[int]) -> bool:
    """Whether the request, its framing aside, starts like a description ("a blue circle at the top")."""
    first = next((words[i] for i in range(len(words)) if i not in framing), None)
    return first is not None and (first in DESCRIPTION_STARTS or first.isdigit())


def _tidy(text: str) -> str:
    tidy = re.sub(r"\s+", " ", text)
    tidy = re.sub(r"\s+([,.;:!?])", r"\1", tidy)
    tidy = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", tidy)
    return tidy.strip(" ,.;:!?-")


def _span(text: str, tokens: list, indices, replace: dict[int, str]) -> str:
    """The words of `text` at `indices` (in order, the text between neighbours kept), words at `replace` replaced."""
    pieces, previous = [], None
    for index in sorted(indices):
        _, start, end = tokens[index]
        if previous is not None:
            pieces.append(text[tokens[previous][2]:start] if index == previous + 1 else " ")
        pieces.append(replace.get(index, text[start:end]))
        previous = index
    return _tidy("".join(pieces))


def _description(text: str, tokens: list, words: list[str], covered: set[int], drop: set[int],
                 replace: dict[int, str]) -> str:
    """verb "drop": what the task's phrases introduce, after the last of them ("draw a red circle" -> "a red
    circle"), else before the first ("a red circle, draw it"); an article closing a phrase ("make a") is kept."""
    if not covered:
        return _span(text, tokens, [i for i in range(len(words)) if i not in drop], replace)
    last = max(covered)
    after = [i for i in range(last + 1, len(words)) if i not in drop and i not in covered]
    if words[last] in ("a", "an"):
        after.insert(0, last)
    while after and words[after[0]] in LEADING_JOINERS:
        after = after[1:]
    if after and not all(words[i] in PRONOUNS for i in after):
        return TRAILING_FILLER.sub("", _span(text, tokens, after, replace))
    return _span(text, tokens, [i for i in range(min(covered)) if i not in drop], replace)


def _object(text: str, tokens: list, words: list[str], covered: list[int], drop: set[int],
            replace: dict[int, str]) -> str:
    """A verb put first (inpaint's "remove"): the object the clause of the first phrase names, from its first
    determiner ("i want the circle gone" -> "the circle"), without where it is ("from the picture"); "the" added
    when it has none ("no more square" -> "the square")."""
    first = min(covered)
    ends = [i for i, (_, _, end) in enumerate(tokens) if text[end:end + 1] in CLAUSE_END or
            text[end:].lstrip()[:1] in CLAUSE_END]
    begin = max((i + 1 for i in ends if i < first), default=0)
    finish = min((i for i in ends if i >= first), default=len(words) - 1)
    kept = [i for i in range(begin, finish + 1) if i not in drop and i not in covered]
    if kept and all(words[i] in PRONOUNS for i in kept) and begin > 0:  # "the square, remove it"
        kept = [i for i in range(begin - 1, -1, -1) if i not in drop][::-1] or kept
    start = next((n for n, i in enumerate(kept) if words[i] in DETERMINERS), 0)
    stop = next((n for n in range(start + 1, len(kept)) if words[kept[n]] in OBJECT_ENDS), len(kept))
    thing = _span(text, tokens, kept[start:stop], replace)
    while TRAILING_PLACE.search(thing) or TRAILING_FILLER.search(thing):
        thing = TRAILING_FILLER.sub("", TRAILING_PLACE.sub("", thing))
    if thing and thing.split()[0] not in DETERMINERS:
        thing = f"the {thing}"
    return thing


def _prompt(text: str, tokens: list, words: list[str], replace: dict[int, str], task: str,
            matches: list[_Match], intents: dict) -> str | None:
    """The prompt passed on for `task` (None when the task takes none)."""
    if not get_task(task).uses_prompt:
        return None
    drop = _framing([stem(w) for w in words])
    verb = intents[task].verb if task in intents else "keep"
    covered = {i for match in matches if match.task == task for i in match.words}
    if verb == "keep":
        return _span(text, tokens, [i for i in range(len(words)) if i not in drop], replace)
    if verb == "drop":
        return _description(text, tokens, words, covered, drop, replace)
    first = min((m for m in matches if m.task == task), key=lambda m: m.start, default=None)
    if first is None:
        return _span(text, tokens, [i for i in range(len(words)) if i not in drop], replace)
    return f"{verb} {_object(text, tokens, words, list(first.words), drop, replace)}".strip()


def _explicit(text: str) -> Route | None:
    """`/name rest`: task `name` outright."""
    head, _, rest = text.strip().partition(" ")
    if not head.startswith("/") or len(head) < 2:
        return None
    name = head[1:]
    if name not in available_tasks():
        raise InputError(f"unknown task {head!r}; ask in words or name one of: "
                         f"{', '.join('/' + t for t in available_tasks())}.", field="text")
    spec = get_task(name)
    prompt = rest.strip() if spec.uses_prompt else None
    return Route(name, prompt, bool(spec.image_inputs), f"you asked for /{name}")


def route(text: str, has_image: bool) -> Route:
    """The task a chat request asks for, and the prompt to pass on (see the module docstring for the rules).

    Args:
        text: The request, as typed.
        has_image: Whether an image is attached or the conversation has one to act on.
    Returns:
        A `Route`; its `needs_image` may be True without an image (the caller asks for one).
    Raises:
        InputError: `text` is not a non-empty string, or names an unknown `/task`.
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"must be a non-empty request, got {text!r}.", field="text")
    explicit = _explicit(text)
    if explicit is not None:
        return explicit
    lowered = text.lower().replace("×", "x")
    tokens = _tokens(lowered)
    intents = _intents()
    words, typed = _correct([word for word, _, _ in tokens], intents)
    matches = _matches([stem(word) for word in words], intents)
    covered = {i for match in matches for i in match.words}
    for index in set(typed) - covered - {i for i, w in enumerate(words) if w in DETERMINERS}:
        # a typo of a task's word is read only where it completes one of its phrases
        words[index] = typed.pop(index)
    stems = [stem(word) for word in words]
    described = _described(words, _framing(stems))
    if matches and (has_image or not described):
        best = _choose(matches, bool(has_image))
        said = " ".join(("... " if n and i > best.words[n - 1] + 1 else "") + words[i] for n, i in enumerate(best.words))
        task, reason = best.task, f"{said!r} asks for {best.task}"
    else:
        task = FALLBACK_TASKS[bool(has_image) and not described]
        reason = (f"{'' if matches else 'no task word; '}{'an image to act on' if has_image else 'no image'}"
                  f"{', and it reads as a description' if described else ''}: {task}")
    replace = {index: words[index] for index in sorted(typed)}
    prompt = _prompt(lowered, tokens, words, replace, task, matches, intents)
    corrections = tuple((typed[index], words[index]) for index in sorted(typed))
    return Route(task, prompt, bool(get_task(task).image_inputs), reason, corrections)
