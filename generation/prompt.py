"""The prompt language: what a user types after `/imagine`, turned into one request per job.

Pure and free of I/O: no model, no settings file, no network. The contract is
../shared/PROMPT_LANGUAGE.md; the choices it leaves open are written down in
docs/prompt-language.md. Every refusal raises `PromptError` with a message short and
plain enough to show a user as it is.

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

Mode = Literal["fast", "relax", "turbo"]

MAX_IMAGE_PROMPTS = 5
MAX_SEED = 4_294_967_295
NO_WEIGHT = -0.5  # Midjourney: `--no x` is `x::-.5`
QUALITY_STEPS = (0.25, 0.5, 1.0, 2.0)
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "gif")
SEEDS_PER_GRID = 4


class PromptError(ValueError):
    """A prompt the language does not allow; the message is meant for the user."""


@dataclass(frozen=True)
class PromptLimits:
    """What an operator may tighten or loosen in config.toml (defaults are the contract's)."""

    max_jobs: int = 10
    max_text_length: int = 1500
    max_aspect_ratio: float = 4.0


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
        """The request written back as one prompt: what result messages and /history show.

        Permutations and `--repeat` are already expanded; parameters at their defaults
        are left out; `--no` items come last, as users write them."""
        positive, negative = self.positive_segments, self.negative_segments
        no_items = all(s.weight == NO_WEIGHT for s in negative)
        if len(positive) == 1 and positive[0].weight == 1 and no_items:
            words = [positive[0].text]
        else:  # every segment with its weight, negative ones in place
            words = [f"{s.text}::{s.weight:g}" for s in self.segments if s.weight > 0 or not no_items]
        words = [*self.image_urls, *words, *(f"<lora:{lora.name}:{lora.weight:g}>" for lora in self.loras)]
        default, params = Params(), self.params
        flags = {
            "--ar": params.aspect if params.aspect != default.aspect else None,
            "--chaos": params.chaos or None,
            "--q": f"{params.quality:g}" if params.quality != default.quality else None,
            "--seed": params.seed,
            "--stop": params.stop if params.stop != default.stop else None,
            "--s": params.stylize if params.stylize != default.stylize else None,
            "--iw": f"{params.image_weight:g}" if params.image_weight != default.image_weight else None,
            "--v": params.version,
            "--style": params.style,
            "--steps": params.steps,
            "--cfg": f"{params.cfg:g}" if params.cfg is not None else None,
            "--sampler": params.sampler,
        }
        words += [f"{flag} {value}" for flag, value in flags.items() if value is not None]
        if params.niji is not None:
            words.append("--niji" if params.niji is True else f"--niji {params.niji}")
        if params.tile:
            words.append("--tile")
        if params.mode is not None:
            words.append(f"--{params.mode}")
        if negative and no_items:
            words.append("--no " + ", ".join(s.text for s in negative))
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


def expand_permutations(text: str, limit: int) -> list[str]:
    """`{red, green} bird` -> ["red bird", "green bird"]; nested groups, cartesian, `\\,` kept.

    Escapes stay in the output (the caller unescapes after splitting `--no` lists), and
    expansion stops with an error as soon as it would pass `limit` prompts.
    """
    results: list[str] = []
    pending = [text]
    while pending:
        current = pending.pop(0)
        group = _first_group(current)
        if group is None:
            results.append(current)
            if len(results) > limit:
                raise _too_many_jobs(len(results), limit)
            continue
        start, end = group
        options = _split_unescaped(current[start + 1:end], ",")
        expanded = [current[:start] + option.strip() + current[end + 1:] for option in options]
        pending[:0] = expanded
        if len(results) + len(pending) > limit:
            raise _too_many_jobs(len(results) + len(pending), limit)
    return results


def _too_many_jobs(count: int | str, limit: int) -> PromptError:
    return PromptError(f"this prompt makes {count} jobs; the limit is {limit}. "
                       "Use fewer {options} or a smaller --repeat.")


def _first_group(text: str) -> tuple[int, int] | None:
    """Index of the first unescaped `{` and of its matching `}`; errors on unbalanced braces."""
    depth, start, i = 0, -1, 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            if depth == 0:
                start = i
            depth += 1
        elif char == "}":
            if depth == 0:
                raise PromptError("there is a `}` without its `{`: write permutations as {a, b}, "
                                  "or `\\}` for a literal brace")
            depth -= 1
            if depth == 0:
                return start, i
        i += 1
    if depth:
        raise PromptError("a `{` is never closed: write permutations as {a, b}, or `\\{` for a literal brace")
    return None


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
    """`\\,` `\\{` `\\}` become literal; `\\(` `\\)` stay for the emphasis reader."""
    return re.sub(r"\\([,{}])", r"\1", text)


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
            raise PromptError(f"{flag} takes a whole number from {low} to {high}, got `{value}`")
        number = int(value)
        if not low <= number <= high:
            raise PromptError(f"{flag} must be between {low} and {high}, got {number}")
        return number
    return read


def _number(flag: str, value: str) -> float:
    if len(value) > 24 or not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)", value):
        raise PromptError(f"{flag} takes a number, got `{value}`")
    return float(value)


def _decimal(low: float, high: float) -> Callable[[str, str, PromptLimits], float]:
    def read(flag: str, value: str, _limits: PromptLimits) -> float:
        number = _number(flag, value)
        if not low <= number <= high:
            raise PromptError(f"{flag} must be between {_fmt(low)} and {_fmt(high)}, got {_fmt(number)}")
        return number
    return read


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _read_quality(flag: str, value: str, _limits: PromptLimits) -> float:
    """Midjourney's coercion: snap down to .25/.5/1/2, above 2 is 2, below .25 is refused."""
    number = _number(flag, value)
    if number < QUALITY_STEPS[0]:
        raise PromptError(f"{flag} must be at least .25 (allowed: .25, .5, 1, 2), got {_fmt(number)}")
    return max(step for step in QUALITY_STEPS if step <= number)


def _read_aspect(flag: str, value: str, limits: PromptLimits) -> str:
    match = re.fullmatch(r"(\d+):(\d+)", value)
    if not match:
        raise PromptError(f"{flag} takes a ratio of whole numbers like 16:9, got `{value}`")
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
        raise PromptError(f"{flag} takes one word, got `{value}`")
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
        raise PromptError(f"unknown parameter --{name}: did you mean --{_BY_NAME[match[0]].name}?")
    known = ", ".join(f"--{spec.name}" for spec in _SPECS)
    raise PromptError(f"unknown parameter --{name}. Known parameters: {known}")


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
                raise PromptError(f"{flag} takes no value, got `{value}`. Put the prompt text before the parameters.")
            values[spec.name] = True
        elif not value:
            if not spec.optional_value:
                raise PromptError(f"{flag} needs a value")
            values[spec.name] = True
        else:
            if spec.name not in ("no", "sampler") and " " in value:
                extra = value.split(" ", 1)[1]
                raise PromptError(f"{flag} takes one value, got `{value}`. Put text such as "
                                  f"`{_short(extra, 30)}` before the parameters.")
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
            raise PromptError(f"`{_short(url)}` is not an image link: image prompts must end in "
                              f"{', '.join('.' + e for e in IMAGE_EXTENSIONS)}")
        urls.append(url)
        rest = rest[match.end():].lstrip()
    if len(urls) > MAX_IMAGE_PROMPTS:
        raise PromptError(f"{len(urls)} image links: at most {MAX_IMAGE_PROMPTS} image prompts are allowed")
    return tuple(urls), rest


def _short(text: str, length: int = 60) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def _take_loras(text: str) -> tuple[tuple[LoraRef, ...], str]:
    loras: list[LoraRef] = []

    def take(match: re.Match[str]) -> str:
        kind, body = match[1].lower(), match[2]
        if kind != "lora":
            raise PromptError(f"`{match[0]}`: only <lora:name:weight> tags are supported")
        name, _, weight_text = body.partition(":")
        name = name.strip()
        if not name:
            raise PromptError(f"`{match[0]}` has no LoRA name: write <lora:name:weight>")
        weight = 1.0
        if weight_text.strip():
            weight = _number(f"the weight in {match[0]}", weight_text.strip())
            if not -5 <= weight <= 5:
                raise PromptError(f"the weight in {match[0]} must be between -5 and 5")
        if any(lora.name == name for lora in loras):
            raise PromptError(f"the LoRA `{name}` is given twice: give it once")
        loras.append(LoraRef(name, weight))
        return " "

    rest = _TAG.sub(take, text)
    return tuple(loras), " ".join(rest.split())


def split_segments(text: str) -> list[Segment]:
    """`space::2 ship` -> space (2), ship (1). Empty segments without a weight are dropped."""
    segments: list[Segment] = []
    position = 0
    for match in _SEGMENT_BREAK.finditer(text):
        piece = _unescape(text[position:match.start()]).strip()
        weight_text = match[1]
        if weight_text is not None and not piece:
            raise PromptError(f"`::{weight_text}` has no text before it to weigh")
        if piece:
            segments.append(Segment(piece, float(weight_text) if weight_text is not None else 1.0))
        position = match.end()
    tail = _unescape(text[position:]).strip()
    if tail:
        segments.append(Segment(tail, 1.0))
    return segments


# ---------------------------------------------------------------------------
# the whole prompt


def parse_prompt(prompt: str, limits: PromptLimits = PromptLimits()) -> list[GenerationRequest]:
    """Every job a prompt asks for, in order (permutations, then `--repeat` copies)."""
    prompt = normalise_dashes(prompt)
    jobs: list[GenerationRequest] = []
    for variant in expand_permutations(prompt, limits.max_jobs):
        request, repeat = _parse_one(variant, limits)
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
    if len(text) > limits.max_text_length:
        raise PromptError(f"the prompt text is {len(text)} characters; the limit is {limits.max_text_length}")
    segments = split_segments(text)
    if not segments and not image_urls:
        raise PromptError("the prompt is empty: describe the picture, or start with an image link")
    if segments and not math.fsum(s.weight for s in segments) > 0:
        raise PromptError("the `::` weights add up to zero or less: they must add up to more than zero")
    segments += [Segment(item, NO_WEIGHT) for item in values.get("no", ())]
    request = GenerationRequest(tuple(segments), params, image_urls, loras)
    return request, values.get("repeat", 1)
