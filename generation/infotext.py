"""Reading back the A1111 `parameters` text the engine writes into every PNG.

The last line is `Key: value` pairs, a value in double quotes (JSON string rules)
when it holds a comma, a quote or a line break, as the WebUI writes them. The
engine adds `Imagine prompt:` (the whole request as a prompt of this project's
language) so that a picture can be varied or upscaled from its file alone with the
settings it was made with; a PNG from the WebUI has only the prompt and the fields.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass

PROMPT_FIELD = "Imagine prompt"
_FIELD = re.compile(r'\s*([\w][\w \-/+]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


@dataclass(frozen=True)
class Infotext:
    prompt: str  # the positive prompt as the WebUI shows it (`::` weights, `<lora:…>` tags)
    negative: str
    fields: dict[str, str]


def quote(value: object) -> str:
    """A field value as the WebUI writes it: quoted when it would break the line apart."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',"\n') else text


def parse_infotext(text: str) -> Infotext:
    """The prompt, negative prompt and fields of a `parameters` text."""
    lines = text.strip().split("\n")
    fields: dict[str, str] = {}
    if len(lines) > 1 and len(found := _FIELD.findall(lines[-1])) >= 3:  # the WebUI's own test for a field line
        lines.pop()
        for key, value in found:
            fields[key.strip()] = _unquote(value.strip())
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line.removeprefix("Negative prompt:").strip()
        (negative if in_negative else prompt).append(line)
    return Infotext("\n".join(prompt).strip(), "\n".join(negative).strip(), fields)


def _unquote(value: str) -> str:
    if len(value) > 1 and value.startswith('"') and value.endswith('"'):
        with contextlib.suppress(ValueError):
            return str(json.loads(value))
    return value
