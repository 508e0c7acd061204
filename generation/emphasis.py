"""The WebUI's emphasis syntax, read the way AUTOMATIC1111's `parse_prompt_attention` reads it.

`(word)` x1.1, `((word))` x1.21, `(word:1.3)` x1.3, `[word]` /1.1, `\\(` `\\)` `\\[` `\\]` `\\\\`
literal, and the word `BREAK` (whole word, capitals) ends the text encoder's window. Users
paste WebUI prompts, so the same text must give the same weights here as there, quirks
included: `(` and `[` are matched on separate stacks (so `[a (b] c)` crosses), a bracket
never closed still counts, a closer with nothing open is text, a lone `\\` vanishes.

Pure text, no torch: the prompt parser checks prompts with it (`emphasis_bounds`) before
any model is loaded, and `generation.conditioning` turns its runs into compel fragments.

Two deliberate differences from the WebUI, both about BREAK:
- the marker is never scaled by brackets around it; the WebUI scales it (`(a BREAK b)`
  gives `["BREAK", -1.1]`), which its encoder then no longer takes for a break and feeds
  the word "BREAK" to the text encoder at weight -1.1;
- the marker is never merged into a neighbour of the same weight (only possible in the
  WebUI with a zero or negative bracket weight around it).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

EMPHASIS_STEP = 1.1  # the WebUI's factor for one pair of () (and 1/1.1 for [])
_ROUND = EMPHASIS_STEP
_SQUARE = 1 / EMPHASIS_STEP  # one division, as the WebUI does: every [] multiplies by this same float

BREAK = "BREAK"
BREAK_WEIGHT = -1.0
BREAK_RUN: tuple[str, float] = (BREAK, BREAK_WEIGHT)  # the WebUI's `["BREAK", -1]`: a window break, not text

_TOKEN = re.compile(
    r"""
    \\[()\[\]\\]?                         # \( \) \[ \] \\ : the character itself; a lone \ : nothing
    | [(\[]                               # openers
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)    # ":1.3)" closes a ( with that weight (if one is open)
    | [)\]]                               # closers
    | [^\\()\[\]:]+                       # plain text
    | :                                   # any other colon is text
    """,
    re.VERBOSE,
)
_BREAK_WORD = re.compile(r"\bBREAK\b")


def count_breaks(text: str) -> int:
    """How many BREAK words a text holds (an upper bound: an escaped one is counted too)."""
    return len(_BREAK_WORD.findall(text))


class EmphasisError(ValueError):
    """A weight the WebUI's pattern accepts but no number reads (`(a:1.2.3)`, `(a:.)`).

    The WebUI fails on these too (its `float()` raises); the prompt parser turns this into a message."""


@dataclass(slots=True)
class _Run:
    """A run while reading; a BREAK marker is never scaled and never merged."""

    text: str
    weight: float = 1.0
    is_break: bool = False


def _read_weight(number: str) -> float:
    try:
        return float(number)  # a long run of digits reads as inf, never raises OverflowError
    except ValueError:
        raise EmphasisError(f"`{number}` is not a number: write an emphasis weight like (word:1.3)") from None


def _split_breaks(piece: str) -> list[_Run]:
    """Text runs with a marker in place of each whole-word BREAK, and the whitespace around it gone."""
    out: list[_Run] = []
    start = 0
    for word in _BREAK_WORD.finditer(piece):
        before = piece[start:word.start()]
        out += [_Run(before.strip() if out else before.rstrip()), _Run(BREAK, BREAK_WEIGHT, is_break=True)]
        start = word.end()
    out.append(_Run(piece[start:].lstrip() if out else piece))
    return out


def webui_runs(text: str) -> list[tuple[str, float]]:
    """(text, weight) runs exactly as the WebUI's `parse_prompt_attention` returns them.

    Text untouched, empty runs kept (an empty run still keeps its neighbours apart: they are
    tokenized separately), equal neighbours merged with exact float equality, weights multiplied
    in the WebUI's order so the floats are the same bits. BREAK is `BREAK_RUN`.
    Costs O(length x nesting depth); check `emphasis_bounds` first on untrusted text.
    """
    runs: list[_Run] = []
    round_open: list[int] = []  # index of the first run inside each open ( / [
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for run in runs[start:]:
            if not run.is_break:
                run.weight *= factor

    for match in _TOKEN.finditer(text):
        token, weight = match.group(0), match.group("weight")
        if token[0] == "\\":
            runs.append(_Run(token[1:]))
        elif token == "(":
            round_open.append(len(runs))
        elif token == "[":
            square_open.append(len(runs))
        elif weight is not None and round_open:
            scale(round_open.pop(), _read_weight(weight))
        elif token == ")" and round_open:
            scale(round_open.pop(), _ROUND)
        elif token == "]" and square_open:
            scale(square_open.pop(), _SQUARE)
        else:  # text, a stray closer, a colon, or ":1.3)" with no ( open
            runs += _split_breaks(token)
    for start in round_open:  # unclosed: rounds first, outermost first, as the WebUI does
        scale(start, _ROUND)
    for start in square_open:
        scale(start, _SQUARE)

    merged: list[tuple[_Run, list[str]]] = []  # (first run, texts to join): linear however many merge
    for run in runs:
        if merged and not run.is_break and not merged[-1][0].is_break and merged[-1][0].weight == run.weight:
            merged[-1][1].append(run.text)
        else:
            merged.append((run, [run.text]))
    return [("".join(texts), run.weight) for run, texts in merged] or [("", 1.0)]


def parse_emphasis(text: str) -> list[tuple[str, float]]:
    """The runs the text encoder gets: the WebUI's runs with whitespace tidied and empty runs dropped.

    Each run is tokenized on its own (by the WebUI and by compel alike), and CLIP's tokenizer
    ignores whitespace at a run's edges and collapses it inside, so tidying changes no token;
    empty runs have no tokens. Runs are not merged again after dropping, so token boundaries stay
    the WebUI's (`a(\\:1.3)b` stays `a`, `b`). BREAK stays as `BREAK_RUN`.
    """
    runs = []
    for piece, weight in webui_runs(text):
        if (piece, weight) == BREAK_RUN:
            runs.append(BREAK_RUN)
        elif tidy := " ".join(piece.split()):
            runs.append((tidy, weight))
    return runs or [("", 1.0)]


def split_windows(runs: list[tuple[str, float]]) -> list[list[tuple[str, float]]]:
    """Runs grouped by BREAK, as the WebUI fills windows: each group starts a new window.

    A BREAK with nothing before it leaves an empty window (`BREAK a`, `a BREAK BREAK b`);
    one at the very end adds none (the WebUI only closes a window that has tokens or is the first).
    """
    windows: list[list[tuple[str, float]]] = [[]]
    for run in runs:
        if run == BREAK_RUN:
            windows.append([])
        elif run[0]:
            windows[-1].append(run)
    if len(windows) > 1 and not windows[-1]:
        windows.pop()
    return windows


def plain_text(text: str) -> str:
    """The words without emphasis marks or BREAK (for pooled embeddings and the infotext's readers).

    Runs are joined with a space, so words the WebUI tokenizes apart stay apart."""
    return " ".join(piece for piece, weight in parse_emphasis(text) if (piece, weight) != BREAK_RUN).strip()


def emphasis_bounds(text: str) -> tuple[int, float]:
    """(deepest nesting of open brackets, largest |weight| of any run with words), in linear time.

    For the prompt parser to refuse before reading: `webui_runs` costs length x depth. Nesting
    counts ( and [ together, as open at once; stray closers and escaped brackets do not count.
    The weight is what `parse_emphasis` gives up to the last bits of rounding (products are taken
    outermost first here, in closing order there); it is `math.inf` when some weight is not a
    finite number (a weight of 400 digits reads as inf; 0 x inf is nan). A text without words
    at all gives 0.0. Raises `EmphasisError` where `webui_runs` does.
    """
    tokens = [(m.group(0), m.group("weight")) for m in _TOKEN.finditer(text)]
    # first pass: each opener's factor, known only when it closes (or at the end)
    factor: dict[int, float] = {}
    round_open: list[int] = []
    square_open: list[int] = []
    depth = 0
    for index, (token, weight) in enumerate(tokens):
        if token == "(":
            round_open.append(index)
        elif token == "[":
            square_open.append(index)
        elif weight is not None and round_open:
            factor[round_open.pop()] = _read_weight(weight)
        elif token == ")" and round_open:
            factor[round_open.pop()] = _ROUND
        elif token == "]" and square_open:
            factor[square_open.pop()] = _SQUARE
        depth = max(depth, len(round_open) + len(square_open))
    factor.update((index, _ROUND) for index in round_open)
    factor.update((index, _SQUARE) for index in square_open)

    # second pass: running products of the open brackets, one stack per kind as the WebUI keeps them
    round_product, square_product = [1.0], [1.0]
    largest = 0.0
    for index, (token, weight) in enumerate(tokens):
        if token == "(":
            round_product.append(round_product[-1] * factor[index])
        elif token == "[":
            square_product.append(square_product[-1] * factor[index])
        elif (weight is not None or token == ")") and len(round_product) > 1:
            round_product.pop()
        elif token == "]" and len(square_product) > 1:
            square_product.pop()
        else:
            words = token[1:] if token[0] == "\\" else _BREAK_WORD.sub(" ", token)
            if words.strip():
                size = abs(round_product[-1] * square_product[-1])
                if not math.isfinite(size):  # nan would slip through max()
                    return depth, math.inf
                largest = max(largest, size)
    return depth, largest
