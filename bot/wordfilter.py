"""The banned-words matcher moderators rely on: entries are matched after normalising case,
accents, look-alike letters, repeated letters and common character swaps, on whole words.

Both the entries and the prompt go through the same steps, so an entry matches however it
was typed (`normalise_entry` shows the form compared):

1. NFKC and casefold (fullwidth `ｎｕｄｅ`, `𝓷𝓾𝓭𝓮` and `NUDE` are `nude`).
2. In a run of non-space characters that mixes ASCII letters with others, Cyrillic and Greek
   look-alikes are read as the Latin letter they imitate (`рorn` with a Cyrillic р is `porn`);
   then `anyascii` transliterates the rest (`nüde` is `nude`, Russian `сука` is `suka`).
   A word written wholly in another script is transliterated, not read as look-alikes,
   because that is how its own speakers' words would be banned.
3. Swaps inside a word: 0→o 1→i 3→e 4→a 5→s 7→t 8→b @→a $→s !→i |→l, only in a run of
   letters, digits and those symbols that holds a letter next to one of them, so numbers
   (`--ar 16:9`, `--seed 42`, `(nude:1.2)`) stay numbers. `!` and `|` at either end of such
   a run stay punctuation (`GORE!!` is `gore`, not `gorei`). A `1` may stand for `l` too, and so
   may a capital `I` next to a lower-case letter (`ki11`, `kiII`): those are read a second time
   with them as `l`.
4. Words are the runs of letters and digits; everything else separates them.
5. Repeated letters: a run of one letter stands for any longer run, so `nude` matches
   `nuuuude`. An entry's doubled letter still needs at least two, so banning `ass` or `butt`
   does not ban `as` or `but`; three or more in an entry count as two (`coool` and `cool`
   are the same entry).

Matching is on whole words: banning `ass` does not match `class`, `bass` or `assistant`, and
`gore` does not match `gorey` (ban `gorey` too if it should). A phrase (`blood bath`) matches
the same words in a row. Two or more one-character words in a row are read as letters
spelled out, and a one-word entry spelled anywhere in them matches: `n u d e`, `n.u.d.e`,
`n_u_d_e` and `a n u d e` match `nude` (their digits are not swapped). When look-alikes or
swapped symbols changed the prompt, it is read a second time without them, so a swap cannot
hide a word by joining it to the next (`nude@x` still matches `nude`). Prompt syntax is just
text: `(nude:1.2)` and `--no gore` are checked like everything else. `find` names the first
entry in the prompt's reading order (at one place, the longest phrase).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby

from anyascii import anyascii

MAX_ENTRY_LENGTH = 100
MAX_ENTRY_WORDS = 6

# Lower-case letters (after casefold) that imitate a Latin letter but transliterate to
# another one, or that look closer to the Latin letter than their transliteration.
_LOOKALIKES = str.maketrans({
    "а": "a", "е": "e", "ё": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i",
    "ї": "i", "ј": "j", "ѕ": "s", "һ": "h", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "к": "k",
    "м": "m", "т": "t", "в": "b", "н": "h", "α": "a", "ε": "e", "ι": "i", "κ": "k", "ν": "v",
    "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "η": "n", "β": "b", "ω": "w",
})
_SWAPS = str.maketrans("0134578@$!|", "oieastbasil")
_SWAPS_ONE_AS_L = str.maketrans("0134578@$!|", "oleastbasil")
_CAPITAL_I_AS_L = re.compile(r"(?<=[a-z])I+|I+(?=[a-z])")  # before casefolding: `kiII`, `Ilegal`
_SWAPPED_SYMBOLS = "@$!|"
# `_swap` looks for runs with str methods on this shape (C loops), much faster than a regex.
_LETTER, _SWAPPABLE, _OTHER = "a", "0", " "
_SWAP_SHAPE = str.maketrans({
    chr(c): _LETTER if chr(c).islower() else _SWAPPABLE if chr(c) in "0123456789@$!|" else _OTHER for c in range(128)
})
_MIXED_RUN = re.compile(r"(?<!\S)\S*?[^\x00-\x7f]\S*")  # a run of non-space characters, not all ASCII
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_ASCII_LETTER = re.compile(r"[a-z]")
_REPEAT = re.compile(r"([a-z])(?=\1)")  # removing these collapses each run of a letter to one
_LONG_REPEATS = re.compile(r"([a-z])\1{2,}")
# After transliteration the text is ASCII: letters and digits are kept, the rest separates words.
_SEPARATE = str.maketrans({chr(c): chr(c) if chr(c).isalnum() else " " for c in range(128)})


def _unspoof(run: re.Match[str]) -> str:
    text = run.group()
    return text.translate(_LOOKALIKES) if _ASCII_LETTER.search(text) else text


def _transliterate(text: str) -> str:
    return _NON_ASCII.sub(lambda run: anyascii(run.group()).lower(), text)


def _next_mix(shape: str, start: int) -> int:
    """Where, from start, a letter sits next to a digit or swap symbol; -1 if nowhere."""
    hits = [i for i in (shape.find(_LETTER + _SWAPPABLE, start), shape.find(_SWAPPABLE + _LETTER, start)) if i >= 0]
    return min(hits, default=-1)


def _swap(text: str, swaps: dict[int, str] = _SWAPS) -> str:
    """Step 3 of the module's docstring on ASCII text: each run of letters, digits and swap
    symbols with a letter next to a digit or symbol gets the swaps, but for `!` and `|` at its ends."""
    shape = text.translate(_SWAP_SHAPE)
    pieces: list[str] = []
    done = 0
    while (hit := _next_mix(shape, done)) >= 0:
        start = shape.rfind(_OTHER, 0, hit) + 1
        end = shape.find(_OTHER, start)
        end = len(text) if end < 0 else end
        run = text[start:end]
        core = run.strip("!|")
        core_start = start + len(run) - len(run.lstrip("!|"))
        pieces += [text[done:core_start], core.translate(swaps)]
        done = core_start + len(core)
    return "".join([*pieces, text[done:]])


def _readings(text: str) -> list[str]:
    """The text as the matcher reads it (steps 1–3 of the module's docstring), then without
    the look-alikes and swapped symbols when those changed anything, then with `1` and a capital
    `I` beside lower-case letters as `l` when it holds any."""
    readings = _read(text, _SWAPS)
    as_l = _CAPITAL_I_AS_L.sub(lambda run: "l" * len(run.group()), text)
    if as_l != text or "1" in text:
        readings += [reading for reading in _read(as_l, _SWAPS_ONE_AS_L) if reading not in readings]
    return readings


def _read(text: str, swaps: dict[int, str]) -> list[str]:
    folded = unicodedata.normalize("NFKC", text).casefold()
    plain = spoofed = folded
    if not folded.isascii():
        spoofed = _MIXED_RUN.sub(_unspoof, folded)
        plain = _transliterate(folded)
        spoofed = plain if spoofed == folded else _transliterate(spoofed)
    swapped = _swap(spoofed, swaps)
    if spoofed == plain and all(swapped.count(symbol) == plain.count(symbol) for symbol in _SWAPPED_SYMBOLS):
        return [swapped]  # digits swapped for letters never join or split words: nothing to read again
    return [swapped, plain]


def _words(reading: str) -> list[str]:
    return reading.translate(_SEPARATE).split()


def _collapse(word: str) -> str:
    return _REPEAT.sub("", word)


def _runs(word: str) -> tuple[int, ...]:
    """How many times each letter of the word's collapsed form repeats (digits count one each)."""
    runs: list[int] = []
    for char, group in groupby(word):
        count = sum(1 for _ in group)
        runs.extend([1] * count if char.isdigit() else [count])
    return tuple(runs)


@dataclass(frozen=True, slots=True)
class _Word:
    """One word of an entry: its letters with repeats collapsed, and the repeats it needs."""

    key: str
    least: tuple[int, ...] | None  # None: every letter single, any repeat matches

    @classmethod
    def of(cls, capped: str) -> _Word:
        least = _runs(capped)
        return cls(_collapse(capped), least if max(least) > 1 else None)

    def fits(self, runs: Sequence[int]) -> bool:
        """Whether a prompt word with the same key (its `_runs`) repeats each letter at least as often."""
        return self.least is None or all(have >= need for have, need in zip(runs, self.least, strict=True))


@dataclass(frozen=True, slots=True)
class _Entry:
    """One compiled entry: its words in order, and the entry as typed, to name it."""

    words: tuple[_Word, ...]
    typed: str

    def fits(self, words: list[str], keys: list[str], start: int) -> bool:
        end = start + len(self.words)
        return (end <= len(keys)
                and all(w.key == key for w, key in zip(self.words, keys[start:end], strict=True))
                and all(w.fits(_runs(word)) for w, word in zip(self.words, words[start:end], strict=True)))


def _entry_words(entry: str) -> list[str]:
    """The entry's words as compared, with three or more of a letter counted as two."""
    return [_LONG_REPEATS.sub(r"\1\1", word) for word in _words(_readings(entry)[0])]


def normalise_entry(entry: str) -> str:
    """The form an entry is compared in: two entries with the same form are the same entry."""
    stripped = entry.strip()
    if len(stripped) > MAX_ENTRY_LENGTH:
        raise ValueError(f"A banned word or phrase can be at most {MAX_ENTRY_LENGTH} characters.")
    words = _entry_words(stripped)
    if not words:
        raise ValueError("A banned word needs at least one letter or digit.")
    if len(words) > MAX_ENTRY_WORDS:
        raise ValueError(f"A banned phrase can be at most {MAX_ENTRY_WORDS} words.")
    return " ".join(words)


class BannedWords:
    """A compiled list of banned words and phrases."""

    def __init__(self, entries: Iterable[str]) -> None:
        """Raises ValueError (from `normalise_entry`) for an entry that cannot be matched."""
        compiled: dict[str, _Entry] = {}  # by normalised form: the first one typed is kept
        for entry in entries:
            form = normalise_entry(entry)
            if form not in compiled:
                compiled[form] = _Entry(tuple(_Word.of(word) for word in form.split()), entry.strip())
        self._index(compiled)

    def _index(self, compiled: dict[str, _Entry]) -> None:
        self._compiled = compiled
        self._entries = tuple(entry.typed for entry in compiled.values())
        self._by_first: dict[str, list[_Entry]] = {}
        for entry in compiled.values():
            self._by_first.setdefault(entry.words[0].key, []).append(entry)
        for candidates in self._by_first.values():  # at one place, name the longest phrase
            candidates.sort(key=lambda entry: len(entry.words), reverse=True)
        self._word_lengths = sorted({len(key) for key, found in self._by_first.items()
                                     if any(len(entry.words) == 1 for entry in found)})
        # A run of one-character words spells a one-word entry only if it is at least this long.
        self._shortest_spelled = max(2, self._word_lengths[0]) if self._word_lengths else None

    @property
    def entries(self) -> tuple[str, ...]:
        return self._entries

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __repr__(self) -> str:
        return f"BannedWords({len(self._entries)} entries)"

    def find(self, text: str) -> str | None:
        """The first banned entry in the text, as the moderator typed it, so a refusal can name it."""
        if not self._entries:
            return None
        for reading in _readings(text):
            found = self._find_in(reading)
            if found is not None:
                return found
        return None

    def _find_in(self, reading: str) -> str | None:
        keys = _words(_collapse(reading))  # collapsing keeps the word boundaries
        if not self._by_first.keys().isdisjoint(keys):
            words = _words(reading)
            for start, key in enumerate(keys):
                for entry in self._by_first.get(key, ()):
                    if entry.fits(words, keys, start):
                        return entry.typed
        if self._shortest_spelled is None:
            return None
        singles = [i for i, key in enumerate(keys) if len(key) == 1]  # one-character words
        first = 0
        for n, i in enumerate(singles):  # each run of them in a row, as letters spelled out
            if n + 1 == len(singles) or singles[n + 1] != i + 1:
                if n - first + 1 >= self._shortest_spelled and (found := self._find_spelled(
                        "".join(keys[singles[first]:i + 1]))) is not None:
                    return found
                first = n + 1
        return None

    def _find_spelled(self, letters: str) -> str | None:
        """A one-word entry spelled anywhere in letters written one by one ("a n u d e")."""
        key, runs = _collapse(letters), None
        for start in range(len(key)):
            for length in self._word_lengths:  # shortest first
                if start + length > len(key):
                    break
                for entry in self._by_first.get(key[start:start + length], ()):
                    if len(entry.words) == 1:
                        runs = runs or _runs(letters)
                        if entry.words[0].fits(runs[start:start + length]):
                            return entry.typed
        return None


def merged(*lists: BannedWords) -> BannedWords:
    """One matcher over several lists (the global list and a server's), the first list's entries
    first; nothing is normalised again, so building one per server stays cheap."""
    compiled: dict[str, _Entry] = {}
    for banned in lists:
        for form, entry in banned._compiled.items():
            compiled.setdefault(form, entry)
    combined = BannedWords(())
    combined._index(compiled)
    return combined
