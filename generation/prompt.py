"""The prompt language: what a user types after `/imagine`, turned into one request per job.

Pure and free of I/O: no model, no settings file, no network. The contract is the
first half of docs/prompt-language.md, the choices it leaves open its second half.
Every refusal raises `PromptError` with a message short and plain enough to show a
user as it is.

The steps, in order:
1. phone dashes (— and –) at the start of a word become `--`;
2. `{a, b}` permutations expand into one prompt each (nested, `\\,` literal);
3. each prompt splits at its first `--` into text and parameters;
4. parameters are read, checked and coerced; `--repeat` multiplies jobs;
5. leading image links are taken off the text, then `<lora:name:w>` tags;
6. the rest splits at `::` into weighted segments; `--no` adds segments at -0.5.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from rapidfuzz import fuzz, process

from .emphasis import EmphasisError, count_breaks, emphasis_bounds, parse_emphasis

Mode = Literal["fast", "relax", "turbo"]

MAX_IMAGE_PROMPTS = 5
MAX_SEED = 4_294_967_295
NO_WEIGHT = -0.5  # Midjourney: `--no x` is `x::-.5`
QUALITY_STEPS = (0.25, 0.5, 1.0, 2.0)
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "gif")
SEEDS_PER_GRID = 4
DECIMALS = 4  # decimal values (weights, --iw, --cfg) are kept to 4 places, so what is shown reads back the same
MAX_SEGMENT_WEIGHT = 1000  # |weight| after `::`
MAX_EMPHASIS_WEIGHT = 10  # |weight| of any emphasised run, nesting included: ((b:5):2) gives b 10
MAX_NESTING = 10  # `{` or `(` / `[` inside each other
MAX_SEGMENTS = 50  # `::` segments and `--no` items together: each is encoded on its own
MAX_BREAKS = 8  # BREAK words in a prompt: each starts another 77-token window


class PromptError(ValueError):
    """A prompt the language does not allow; the message is meant for the user.

    However long what the user typed, the message stays short: it is cut at `MESSAGE_LIMIT`."""

    MESSAGE_LIMIT = 400

    def __init__(self, message: str) -> None:
        super().__init__(shortened(message, self.MESSAGE_LIMIT))


@dataclass(frozen=True)
class PromptLimits:
    """What an operator may tighten or loosen in config.toml (defaults are the contract's)."""

    max_jobs: int = 10
    max_text_length: int = 1500
    max_aspect_ratio: float = 4.0
    max_input_length: int = 4000  # the whole prompt as typed (links, tags, parameters), checked before anything


@dataclass(frozen=True)
class Segment:
    text: str
    weight: float


@dataclass(frozen=True)
class LoraRef:
    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class Params:
    aspect: str = "1:1"
    chaos: int = 0
    quality: float = 1.0
    seed: int | None = None
    stop: int = 100
    stylize: int = 100
    tile: bool = False
    niji: str | bool | None = None
    version: str | None = None
    style: str | None = None
    image_weight: float = 1.0
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    mode: Mode | None = None

    @property
    def aspect_ratio(self) -> tuple[int, int]:
        width, height = self.aspect.split(":")
        return int(width), int(height)


@dataclass(frozen=True)
class GenerationRequest:
    """One job's worth of prompt: what the engine needs to know about the user's words."""

    segments: tuple[Segment, ...]
    params: Params = field(default_factory=Params)
    image_urls: tuple[str, ...] = ()
    loras: tuple[LoraRef, ...] = ()

    @property
    def positive_segments(self) -> tuple[Segment, ...]:
        return tuple(s for s in self.segments if s.weight > 0)

    @property
    def negative_segments(self) -> tuple[Segment, ...]:
        return tuple(s for s in self.segments if s.weight < 0)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape other tools read (`python -m bot parse`)."""
        params = asdict(self.params)
        for name in ("quality", "image_weight", "cfg"):
            params[name] = _plain_number(params[name])
        return {
            "segments": [{"text": s.text, "weight": float(s.weight)} for s in self.segments],
            "params": params,
            "image_urls": list(self.image_urls),
            "loras": [{"name": lora.name, "weight": float(lora.weight)} for lora in self.loras],
        }

    def to_prompt(self) -> str:
        """The request written back as one prompt: what result messages, /history and Remix show.

        It parses back to this same request (a property the tests check on fuzzed prompts):
        permutations and `--repeat` are already expanded, parameters at their defaults are
        left out, segments keep their order (weight 0 included), the trailing -0.5 segments
        are written as `--no`, and braces and commas are escaped where they would be read."""
        segments = list(self.segments)
        split = len(segments)
        while split and segments[split - 1].weight == NO_WEIGHT:
            split -= 1
        typed, no_items = segments[:split], segments[split:]
        if len(typed) == 1 and typed[0].weight == 1:
            words = [_escape(typed[0].text)]
        else:  # a text ending in ":" would swallow the `::` that follows it
            # a space before `::` where the text ends in ":" (it would swallow the `::`) or holds a
            # "<" (`<3::1 … >` would read as a tag)
            words = [f"{_escape(s.text)}{' ' if s.text.endswith(':') or '<' in s.text else ''}::{_fmt(s.weight)}"
                     for s in typed]
        if words and _URL.match(words[0]):  # text that starts with a link: an empty `::` keeps it text
            words[0] = ":: " + words[0]
        words = [*self.image_urls, *words, *(f"<lora:{lora.name}:{_fmt(lora.weight)}>" for lora in self.loras)]
        default, params = Params(), self.params
        flags = {
            "--ar": params.aspect if params.aspect != default.aspect else None,
            "--chaos": params.chaos or None,
            "--q": _fmt(params.quality) if params.quality != default.quality else None,
            "--seed": params.seed,
            "--stop": params.stop if params.stop != default.stop else None,
            "--s": params.stylize if params.stylize != default.stylize else None,
            "--iw": _fmt(params.image_weight) if params.image_weight != default.image_weight else None,
            "--v": params.version,
            "--style": params.style,
            "--steps": params.steps,
            "--cfg": _fmt(params.cfg) if params.cfg is not None else None,
            "--sampler": params.sampler,
        }
        words += [f"{flag} {value}" for flag, value in flags.items() if value is not None]
        if params.niji is not None:
            words.append("--niji" if params.niji is True else f"--niji {params.niji}")
        if params.tile:
            words.append("--tile")
        if params.mode is not None:
            words.append(f"--{params.mode}")
        if no_items:
            words.append("--no " + ", ".join(_no_item(s.text) for s in no_items))
        return " ".join(words)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRequest:
        """The inverse of `to_dict`: a stored job's request, read back to run it."""
        return cls(
            segments=tuple(Segment(s["text"], float(s["weight"])) for s in data["segments"]),
            params=Params(**data.get("params", {})),
            image_urls=tuple(data.get("image_urls", ())),
            loras=tuple(LoraRef(lora["name"], float(lora["weight"])) for lora in data.get("loras", ())),
        )


def _no_item(text: str) -> str:
    """A `--no` item as written back: commas and braces escaped; a space keeps a trailing
    backslash from escaping the comma after it."""
    escaped = _escape(text, "{},")
    odd_backslashes = (len(escaped) - len(escaped.rstrip("\\"))) % 2
    return escaped + " " if odd_backslashes else escaped


def _plain_number(value: float | None) -> float | int | None:
    if value is None or not float(value).is_integer():
        return value
    return int(value)


# ---------------------------------------------------------------------------
# 1. dashes, 2. permutations

_PHONE_DASH = re.compile(r"(?<!\S)[—–](?=[A-Za-z])")


def normalise_dashes(text: str) -> str:
    """Discord on phones turns `--` into an em dash; at the start of a word both mean `--`."""
    return _PHONE_DASH.sub("--", text)


def expand_permutations(text: str, limit: int, max_depth: int = 8) -> list[str]:
    """`{red, green} bird` -> ["red bird", "green bird"]; nested groups, cartesian, `\\,` kept.

    One pass reads the braces into a tree (nesting over `max_depth` is refused there), the
    number of prompts is counted on the tree, and only a prompt within `limit` is expanded:
    the work is linear in the text times the prompts made. Escapes stay in the output (the
    caller unescapes after splitting `--no` lists); each option is trimmed.
    """
    tree = _read_groups(text, max_depth)
    count = _count(tree)
    if count > limit:
        raise _too_many_jobs(count if count <= _COUNT_SHOWN else f"more than {_COUNT_SHOWN}", limit)
    return _expand(tree)


_COUNT_SHOWN = 1000  # larger counts are reported as "more than 1000"
# a sequence: literal text and groups; a group: its options, each a sequence
_Sequence = list  # list[str | list[_Sequence]]


def _read_groups(text: str, max_depth: int) -> _Sequence:
    """The text as a tree of literal pieces and `{...}` groups, in one left-to-right pass."""
    root: _Sequence = []
    stack: list[tuple[list[_Sequence], _Sequence]] = []  # (the open group's options, the sequence it is in)
    current, piece, i = root, [], 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            piece.append(text[i:i + 2])
            i += 2
            continue
        if char == "{":
            if len(stack) >= max_depth:
                raise PromptError(f"permutations are nested more than {max_depth} deep: use fewer {{ }} levels")
            current.append("".join(piece))
            options: list[_Sequence] = [[]]
            stack.append((options, current))
            current, piece = options[0], []
        elif char == "," and stack:
            current.append("".join(piece))
            options = stack[-1][0]
            options.append([])
            current, piece = options[-1], []
        elif char == "}":
            if not stack:
                raise PromptError("there is a `}` without its `{`: write permutations as {a, b}, "
                                  "or `\\}` for a literal brace")
            current.append("".join(piece))
            options, outer = stack.pop()
            outer.append(options)
            current, piece = outer, []
        else:
            piece.append(char)
        i += 1
    if stack:
        raise PromptError("a `{` is never closed: write permutations as {a, b}, or `\\{` for a literal brace")
    current.append("".join(piece))
    return root


def _count(sequence: _Sequence) -> int:
    """How many prompts a sequence makes, saturating just past what can be reported."""
    total = 1
    for part in sequence:
        if isinstance(part, list):
            total = min(total * min(sum(_count(option) for option in part), _COUNT_SHOWN + 1),
                        _COUNT_SHOWN + 1)
    return total


def _expand(sequence: _Sequence) -> list[str]:
    """Every prompt of a sequence, first group outermost; options trimmed."""
    results = [""]
    for part in sequence:
        if isinstance(part, str):
            results = [result + part for result in results]
        else:
            choices = [text.strip() for option in part for text in _expand(option)]
            results = [result + choice for result in results for choice in choices]
    return results


def _too_many_jobs(count: int | str, limit: int) -> PromptError:
    return PromptError(f"this prompt makes {count} jobs; the limit is {limit}. "
                       "Use fewer {options} or a smaller --repeat.")


def _split_unescaped(text: str, separator: str) -> list[str]:
    """Split on `separator` outside nested braces and not preceded by a backslash."""
    parts, depth, current, i = [], 0, [], 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            current.append(text[i:i + 2])
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        if char == separator and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    """`\\,` `\\{` `\\}` become literal; every other pair (`\\(`, `\\\\`) stays for the emphasis reader.

    Read left to right in pairs, as the brace reader does, so `\\\\{` is an escaped
    backslash before a real brace and `to_prompt` can write any text back."""
    return _ESCAPE_PAIR.sub(lambda m: m[1] if m[1] in ",{}" else m[0], text)


_ESCAPE_PAIR = re.compile(r"\\(.)", re.DOTALL)


def _escape(text: str, specials: str = "{}") -> str:
    """The inverse of `_unescape` for text that came out of it: a backslash before each special."""
    return "".join("\\" + char if char in specials else char for char in text)


# ---------------------------------------------------------------------------
# 3./4. parameters


@dataclass(frozen=True)
class _Spec:
    name: str
    aliases: tuple[str, ...]
    read: Callable[[str, str, PromptLimits], Any] | None  # None: a flag, takes no value
    optional_value: bool = False


def _whole(low: int, high: int) -> Callable[[str, str, PromptLimits], int]:
    def read(flag: str, value: str, _limits: PromptLimits) -> int:
        if len(value) > 12 or not re.fullmatch(r"[+-]?\d+", value):
            raise PromptError(f"{flag} takes a whole number from {low} to {high}, got `{shortened(value, 40)}`")
        number = int(value)
        if not low <= number <= high:
            raise PromptError(f"{flag} must be between {low} and {high}, got {number}")
        return number
    return read


def _number(flag: str, value: str) -> float:
    if len(value) > 24 or not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)", value):
        raise PromptError(f"{flag} takes a number, got `{shortened(value, 40)}`")
    return round(float(value), DECIMALS)


def _decimal(low: float, high: float) -> Callable[[str, str, PromptLimits], float]:
    def read(flag: str, value: str, _limits: PromptLimits) -> float:
        number = _number(flag, value)
        if not low <= number <= high:
            raise PromptError(f"{flag} must be between {_fmt(low)} and {_fmt(high)}, got {_fmt(number)}")
        return number
    return read


def _fmt(number: float) -> str:
    """A number as the parser reads it back exactly: no exponent, at most `DECIMALS` places."""
    return f"{number:.{DECIMALS}f}".rstrip("0").rstrip(".") if number else "0"


def _read_quality(flag: str, value: str, _limits: PromptLimits) -> float:
    """Midjourney's coercion: snap down to .25/.5/1/2, above 2 is 2, below .25 is refused."""
    number = _number(flag, value)
    if number < QUALITY_STEPS[0]:
        raise PromptError(f"{flag} must be at least .25 (allowed: .25, .5, 1, 2), got {_fmt(number)}")
    return max(step for step in QUALITY_STEPS if step <= number)


def _read_aspect(flag: str, value: str, limits: PromptLimits) -> str:
    match = re.fullmatch(r"(\d{1,5}):(\d{1,5})", value)
    if not match:
        raise PromptError(f"{flag} takes a ratio of whole numbers like 16:9, got `{shortened(value, 40)}`")
    width, height = int(match[1]), int(match[2])
    if width == 0 or height == 0:
        raise PromptError(f"{flag} sides must be at least 1, got {width}:{height}")
    bound = _fmt(limits.max_aspect_ratio)
    if max(width / height, height / width) > limits.max_aspect_ratio:
        raise PromptError(f"{flag} {width}:{height} is too {'wide' if width > height else 'tall'}: "
                          f"the ratio must be between 1:{bound} and {bound}:1")
    return f"{width}:{height}"


def _read_word(flag: str, value: str, _limits: PromptLimits) -> str:
    if " " in value:
        raise PromptError(f"{flag} takes one word, got `{shortened(value, 40)}`")
    return value.lower()


def _read_sampler(flag: str, value: str, _limits: PromptLimits) -> str:
    """WebUI names have spaces ("DPM++ 2M Karras"): they become `dpm++_2m_karras`."""
    return normalise_sampler_name(value)


def normalise_sampler_name(name: str) -> str:
    return re.sub(r"[\s_\-]+", "_", name.strip().lower())


def _read_no(flag: str, value: str, _limits: PromptLimits) -> tuple[str, ...]:
    items = tuple(_unescape(item).strip() for item in _split_unescaped(value, ","))
    items = tuple(item for item in items if item)
    if not items:
        raise PromptError(f"{flag} needs something to leave out, like `{flag} fog, text`")
    return items


_SPECS = (
    _Spec("aspect", ("ar",), _read_aspect),
    _Spec("chaos", ("c",), _whole(0, 100)),
    _Spec("no", (), _read_no),
    _Spec("quality", ("q",), _read_quality),
    _Spec("seed", (), _whole(0, MAX_SEED)),
    _Spec("stop", (), _whole(10, 100)),
    _Spec("stylize", ("s",), _whole(0, 1000)),
    _Spec("tile", (), None),
    _Spec("niji", (), _read_word, optional_value=True),
    _Spec("version", ("v",), _read_word),
    _Spec("style", (), _read_word),
    _Spec("iw", (), _decimal(0, 3)),
    _Spec("repeat", ("r",), _whole(1, 40)),
    _Spec("fast", (), None),
    _Spec("relax", (), None),
    _Spec("turbo", (), None),
    _Spec("steps", (), _whole(1, 150)),
    _Spec("cfg", (), _decimal(0, 30)),
    _Spec("sampler", (), _read_sampler),
)
_BY_NAME = {name: spec for spec in _SPECS for name in (spec.name, *spec.aliases)}
_PARAM_START = re.compile(r"(?<!\S)--")


def _lookup(name: str) -> _Spec:
    spec = _BY_NAME.get(name.lower())
    if spec is not None:
        return spec
    if not name:
        raise PromptError("a lone `--`: parameters are written `--name value`, like `--ar 16:9`")
    match = process.extractOne(name.lower(), list(_BY_NAME), scorer=fuzz.ratio, score_cutoff=60)
    if match is not None:
        raise PromptError(f"unknown parameter --{shortened(name, 40)}: did you mean --{_BY_NAME[match[0]].name}?")
    known = ", ".join(f"--{spec.name}" for spec in _SPECS)
    raise PromptError(f"unknown parameter --{shortened(name, 40)}. Known parameters: {known}")


# parameters that exclude each other: a prompt's own choice drops the suffix's rival
_RIVALS = {"niji": {"version"}, "version": {"niji"}, "fast": {"relax", "turbo"}, "relax": {"fast", "turbo"},
           "turbo": {"fast", "relax"}}


def parameter_chunks(text: str) -> dict[str, str]:
    """`--s 250 --style raw` -> {"stylize": "--s 250", "style": "--style raw"}, by canonical
    name (aliases resolved); unknown names are kept under their own name for the parser to report."""
    match = _PARAM_START.search(normalise_dashes(text))
    if match is None:
        return {}
    text = normalise_dashes(text)[match.start():]
    starts = [m.start() for m in _PARAM_START.finditer(text)] + [len(text)]
    chunks: dict[str, str] = {}
    for start, end in itertools.pairwise(starts):
        chunk = " ".join(text[start:end].split())
        name = chunk[2:].split(" ", 1)[0].lower()
        spec = _BY_NAME.get(name)
        chunks[spec.name if spec else name] = chunk
    return chunks


def apply_suffix(prompt: str, suffix: str) -> str:
    """A user's default parameters (/settings) added to a prompt; the prompt's own win."""
    own = parameter_chunks(prompt)
    taken = set(own) | {rival for name in own for rival in _RIVALS.get(name, ())}
    extra = [chunk for name, chunk in parameter_chunks(suffix).items() if name not in taken]
    return " ".join([prompt.strip(), *extra]) if extra else prompt


def with_parameter(suffix: str, name: str, chunk: str | None) -> str:
    """A suffix with parameter `name` set to `chunk` (`--s 250`), or removed when None."""
    chunks = parameter_chunks(suffix)
    chunks.pop(name, None)
    for rival in _RIVALS.get(name, ()) if chunk is not None else ():
        chunks.pop(rival, None)
    if chunk is not None:
        chunks[name] = chunk
    return " ".join(chunks.values())


def _read_parameters(text: str, limits: PromptLimits) -> dict[str, Any]:
    """`--ar 16:9 --no fog, rain --tile` -> {"aspect": "16:9", "no": ("fog", "rain"), "tile": True}."""
    starts = [m.start() for m in _PARAM_START.finditer(text)] + [len(text)]
    values: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for start, end in itertools.pairwise(starts):
        chunk = text[start + 2:end]
        name = "" if chunk[:1].isspace() else chunk.split(None, 1)[0] if chunk.strip() else ""
        value = " ".join(chunk[len(name):].split())
        spec = _lookup(name)
        flag = f"--{name.lower()}"
        if spec.name in values:
            earlier = spelled[spec.name]
            same = f" ({earlier} and {flag} are the same parameter)" if earlier != flag else ""
            raise PromptError(f"--{spec.name} is given twice{same}: give it once")
        spelled[spec.name] = flag
        if spec.read is None:
            if value:
                raise PromptError(f"{flag} takes no value, got `{shortened(value, 40)}`. "
                                  "Put the prompt text before the parameters.")
            values[spec.name] = True
        elif not value:
            if not spec.optional_value:
                raise PromptError(f"{flag} needs a value")
            values[spec.name] = True
        else:
            if spec.name not in ("no", "sampler") and " " in value:
                extra = value.split(" ", 1)[1]
                raise PromptError(f"{flag} takes one value, got `{shortened(value, 40)}`. Put text such as "
                                  f"`{shortened(extra, 30)}` before the parameters.")
            values[spec.name] = spec.read(flag, value, limits)
    return values


def _params_from(values: dict[str, Any]) -> Params:
    modes = [m for m in ("fast", "relax", "turbo") if m in values]
    if len(modes) > 1:
        raise PromptError(f"choose one queue mode: {' and '.join('--' + m for m in modes)} were both given")
    if "niji" in values and "version" in values:
        raise PromptError("--niji and --version both pick the model: give one of them")
    return Params(
        aspect=values.get("aspect", "1:1"),
        chaos=values.get("chaos", 0),
        quality=values.get("quality", 1.0),
        seed=values.get("seed"),
        stop=values.get("stop", 100),
        stylize=values.get("stylize", 100),
        tile=values.get("tile", False),
        niji=values.get("niji"),
        version=values.get("version"),
        style=values.get("style"),
        image_weight=values.get("iw", 1.0),
        steps=values.get("steps"),
        cfg=values.get("cfg"),
        sampler=values.get("sampler"),
        mode=modes[0] if modes else None,  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------------------
# 5. image links and LoRA tags, 6. segments

_URL = re.compile(r"https?://\S+", re.IGNORECASE)
_IMAGE_URL = re.compile(r"https?://[^\s?#]+\.(?:" + "|".join(IMAGE_EXTENSIONS) + r")(?:[?#]\S*)?",
                        re.IGNORECASE)
_TAG = re.compile(r"<(\w+):([^<>]*)>")
_SEGMENT_BREAK = re.compile(r"::(-?(?:\d+\.?\d*|\.\d+))?")


def _take_image_urls(text: str) -> tuple[tuple[str, ...], str]:
    urls: list[str] = []
    rest = text.strip()
    while (match := _URL.match(rest)) is not None:
        url = match.group(0)
        if not _IMAGE_URL.fullmatch(url):
            raise PromptError(f"`{shortened(url)}` is not an image link: image prompts must end in "
                              f"{', '.join('.' + e for e in IMAGE_EXTENSIONS)}")
        urls.append(url)
        rest = rest[match.end():].lstrip()
        if len(urls) > MAX_IMAGE_PROMPTS:
            raise PromptError(f"too many image links: at most {MAX_IMAGE_PROMPTS} image prompts are allowed")
    return tuple(urls), rest


def shortened(text: str, length: int = 60) -> str:
    """What a message quotes of the user's text: at most `length` characters, with an ellipsis."""
    return text if len(text) <= length else text[: length - 1] + "…"


def _take_loras(text: str) -> tuple[tuple[LoraRef, ...], str]:
    loras: list[LoraRef] = []

    def take(match: re.Match[str]) -> str:
        kind, body, tag = match[1].lower(), match[2], shortened(match[0], 40)
        if kind != "lora":
            raise PromptError(f"`{tag}`: only <lora:name:weight> tags are supported")
        name, _, weight_text = body.partition(":")
        name = name.strip()
        if not name:
            raise PromptError(f"`{tag}` has no LoRA name: write <lora:name:weight>")
        weight = 1.0
        if weight_text.strip():
            weight = _number(f"the weight in {tag}", weight_text.strip())
            if not -5 <= weight <= 5:
                raise PromptError(f"the weight in {tag} must be between -5 and 5")
        if any(lora.name == name for lora in loras):
            raise PromptError(f"the LoRA `{shortened(name, 40)}` is given twice: give it once")
        loras.append(LoraRef(name, weight))
        return " "

    rest = text
    while _TAG.search(rest):  # taking a tag out can close another around it: `<a:<lora:x>>` leaves `<a: >`
        rest = _TAG.sub(take, rest)
    return tuple(loras), " ".join(rest.split())


def split_segments(text: str) -> list[Segment]:
    """`space::2 ship` -> space (2), ship (1). Empty segments without a weight are dropped."""
    segments: list[Segment] = []
    position = 0
    for match in _SEGMENT_BREAK.finditer(text):
        piece = _unescape(text[position:match.start()]).strip()
        weight_text = match[1]
        if weight_text is not None and not piece:
            raise PromptError(f"`::{shortened(weight_text, 20)}` has no text before it to weigh")
        if piece:
            segments.append(Segment(piece, _segment_weight(weight_text) if weight_text is not None else 1.0))
        position = match.end()
    tail = _unescape(text[position:]).strip()
    if tail:
        segments.append(Segment(tail, 1.0))
    return segments


def _segment_weight(text: str) -> float:
    weight = round(float(text), DECIMALS) if len(text) <= 16 else math.inf
    if not abs(weight) <= MAX_SEGMENT_WEIGHT:
        raise PromptError(f"the weight `::{shortened(text, 20)}` is too large: `::` weights go from "
                          f"-{MAX_SEGMENT_WEIGHT} to {MAX_SEGMENT_WEIGHT}")
    return weight


def _check_emphasis(text: str) -> None:
    """Brackets nested at most `MAX_NESTING` deep (measured in one pass before the emphasis is
    read), and every run's weight finite and within `MAX_EMPHASIS_WEIGHT`."""
    if "(" not in text and "[" not in text:  # no brackets: every weight is 1
        return
    try:
        depth, _ = emphasis_bounds(text)
        if depth > MAX_NESTING:
            raise PromptError(f"brackets are nested more than {MAX_NESTING} deep: use (word:1.5) "
                              "instead of many ((( )))")
        runs = parse_emphasis(text)
    except EmphasisError as error:
        raise PromptError(shortened(str(error), 120)) from None
    for piece, weight in runs:
        if not abs(weight) <= MAX_EMPHASIS_WEIGHT:
            raise PromptError(f"the emphasis on `{shortened(piece.strip(), 30)}` comes to {weight:.3g}: "
                              f"emphasis weights go from -{MAX_EMPHASIS_WEIGHT} to {MAX_EMPHASIS_WEIGHT}")


_PARAMETER_LIKE = re.compile(r"(?<!\S)(?:--|[—–](?=[A-Za-z]))\S*")


def _refuse_misplaced_parameters(text: str, where: str) -> None:
    """Text that would read as a parameter once written back with a space before it (after a
    `<lora:>` tag, right after `::`, or after a comma in `--no`) is refused: it was most
    likely meant as one, and the prompt shown back must mean what was asked."""
    if match := _PARAMETER_LIKE.search(text):
        raise PromptError(f"`{shortened(match[0], 30)}` {where}: parameters go after all the text, "
                          "each with a space before it")


# ---------------------------------------------------------------------------
# the whole prompt


def parse_prompt(prompt: str, limits: PromptLimits = PromptLimits()) -> list[GenerationRequest]:
    """Every job a prompt asks for, in order (permutations, then `--repeat` copies)."""
    if len(prompt) > limits.max_input_length:
        raise PromptError(f"the prompt is {len(prompt)} characters long with its links and parameters; "
                          f"the limit is {limits.max_input_length}")
    prompt = normalise_dashes(prompt)
    jobs: list[GenerationRequest] = []
    for variant in expand_permutations(prompt, limits.max_jobs, MAX_NESTING):
        request, repeat = _parse_one(variant, limits)
        if len(shown := request.to_prompt()) > limits.max_input_length:  # Remix must be able to show it
            raise PromptError(f"written out in full, the prompt is {len(shown)} characters; "
                              f"the limit is {limits.max_input_length}")
        if len(jobs) + repeat > limits.max_jobs:
            raise _too_many_jobs("more than " + str(limits.max_jobs) if len(jobs) else repeat, limits.max_jobs)
        jobs.extend(_repeated(request, repeat))
    return jobs


def _repeated(request: GenerationRequest, repeat: int) -> list[GenerationRequest]:
    """`--repeat N` copies; with `--seed S`, copy k uses S + 4k so no two grids share an image."""
    seed = request.params.seed
    if seed is None:
        return [request] * repeat
    return [replace(request, params=replace(request.params, seed=(seed + SEEDS_PER_GRID * k) % (MAX_SEED + 1)))
            for k in range(repeat)]


def _parse_one(prompt: str, limits: PromptLimits) -> tuple[GenerationRequest, int]:
    match = _PARAM_START.search(prompt)
    text, parameter_text = (prompt[:match.start()], prompt[match.start():]) if match else (prompt, "")
    values = _read_parameters(parameter_text, limits)
    params = _params_from(values)

    image_urls, text = _take_image_urls(text)
    loras, text = _take_loras(text)
    segments = split_segments(text)
    no_items = values.get("no", ())
    if len(segments) + len(no_items) > MAX_SEGMENTS:
        raise PromptError(f"this prompt has {len(segments) + len(no_items)} `::` segments and --no items; "
                          f"the limit is {MAX_SEGMENTS}")
    breaks = sum(count_breaks(piece) for piece in (*(s.text for s in segments), *no_items))
    if breaks > MAX_BREAKS:
        raise PromptError(f"this prompt has {breaks} BREAKs; the limit is {MAX_BREAKS}")
    text_length = sum(len(segment.text) for segment in segments)  # what is shown back has the same count
    if text_length > limits.max_text_length:
        raise PromptError(f"the prompt text is {text_length} characters; the limit is {limits.max_text_length}")
    for segment in segments:
        _refuse_misplaced_parameters(segment.text, "is read as text here")
        _check_emphasis(segment.text)
    for item in no_items:
        _refuse_misplaced_parameters(item, "is inside --no")
        _check_emphasis(item)
    if not segments and not image_urls:
        raise PromptError("the prompt is empty: describe the picture, or start with an image link")
    if segments and not math.fsum(s.weight for s in segments) > 0:
        raise PromptError("the `::` weights add up to zero or less: they must add up to more than zero")
    segments += [Segment(item, NO_WEIGHT) for item in no_items]
    request = GenerationRequest(tuple(segments), params, image_urls, loras)
    return request, values.get("repeat", 1)
