"""What Discord refuses in a request body, as the fake Discord of discord_harness.py checks it.

Two layers, both answered as Discord does, 400 with code 50035 "Invalid Form Body" and an
`errors` tree naming each refused field (`{"embeds": {"0": {"title": {"_errors": [...]}}}}`):

- the documented limits of messages, components and modals (Discord's developer docs, "Message
  Resource", "Embed Limits", "Component Reference", "Interactions: Modal"), which the published
  schema leaves out or cannot say (the 6000 characters of all embeds, a select alone in its row,
  unique custom_ids, five action rows without the components-v2 flag, a button's label or emoji,
  allowed_mentions naming users or roles both in `parse` and by id);
- Discord's own OpenAPI document (discord/discord-api-spec), each route's request-body schema
  vendored in discord_schemas.json by extract_discord_schemas.py and checked with jsonschema.

The inner `_errors` codes are Discord's where known (BASE_TYPE_MAX_LENGTH, BASE_TYPE_REQUIRED,
MAX_EMBED_SIZE_EXCEEDED, COMPONENT_CUSTOM_ID_DUPLICATED, SELECT_COMPONENT_OPTION_VALUE_DUPLICATED,
COMPONENT_LAYOUT_WIDTH_EXCEEDED); a few are best guesses. Tests should assert on the status, the
top-level code and the path of the refused field, not on the inner texts.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

SCHEMAS = Path(__file__).resolve().parent / "discord_schemas.json"

CONTENT_LIMIT = 2000
EMBEDS_LIMIT = 10
EMBED_TOTAL_LIMIT = 6000
EMBED_LIMITS = {"title": 256, "description": 4096}
FIELDS_LIMIT, FIELD_NAME_LIMIT, FIELD_VALUE_LIMIT = 25, 256, 1024
FOOTER_LIMIT, AUTHOR_LIMIT = 2048, 256
ROWS_LIMIT, ROW_WIDTH = 5, 5
CUSTOM_ID_LIMIT, BUTTON_LABEL_LIMIT = 100, 80
OPTIONS_LIMIT, OPTION_TEXT_LIMIT, PLACEHOLDER_LIMIT = 25, 100, 150
FILES_LIMIT = 10
MODAL_TITLE_LIMIT, MODAL_ROWS_LIMIT, TEXT_INPUT_LABEL_LIMIT = 45, 5, 45
TEXT_INPUT_VALUE_LIMIT, TEXT_INPUT_PLACEHOLDER_LIMIT = 4000, 100
COMPONENTS_V2 = 1 << 15
SELECTS = {3, 5, 6, 7, 8}  # string, user, role, mentionable and channel selects
LINK, PREMIUM = 5, 6

Issue = tuple[tuple[str | int, ...], str, str]  # (path to the field, Discord's error code, its message)


def too_long(limit: int) -> tuple[str, str]:
    return "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length."


def too_short(limit: int) -> tuple[str, str]:
    return "BASE_TYPE_MIN_LENGTH", f"Must be {limit} or more in length."


REQUIRED = ("BASE_TYPE_REQUIRED", "This field is required")


def error_tree(issues: list[Issue]) -> dict[str, Any]:
    """Discord's `errors` object: nested by path, each leaf `{"_errors": [{"code", "message"}]}`."""
    tree: dict[str, Any] = {}
    for path, code, message in issues:
        node = tree
        for key in path:
            node = node.setdefault(str(key), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})
    return tree


def _length(value: Any) -> int:
    return len(value) if isinstance(value, str | list) else 0


def _limit(issues: list[Issue], path: tuple[str | int, ...], value: Any, limit: int) -> None:
    if _length(value) > limit:
        issues.append((path, *too_long(limit)))


# --- messages ----------------------------------------------------------------------


def message_issues(body: dict[str, Any], files: int = 0, prefix: tuple[str | int, ...] = ()) -> list[Issue]:
    """The documented limits of a message body (create or edit), `files` uploaded with it."""
    issues: list[Issue] = []
    _limit(issues, (*prefix, "content"), body.get("content"), CONTENT_LIMIT)
    embeds = body.get("embeds") or []
    if isinstance(embeds, list):
        issues += embed_issues(embeds, prefix)
    components = body.get("components") or []
    if isinstance(components, list) and not int(body.get("flags") or 0) & COMPONENTS_V2:
        issues += component_issues(components, prefix)
    if files > FILES_LIMIT:
        issues.append(((*prefix, "files"), *too_long(FILES_LIMIT)))
    mentions = body.get("allowed_mentions")
    if isinstance(mentions, dict):
        for kind in ("users", "roles"):
            if kind in (mentions.get("parse") or []) and mentions.get(kind):
                issues.append(((*prefix, "allowed_mentions"), "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                               f'parse:["{kind}"] and {kind}: [ids] are mutually exclusive.'))
    return issues


def embed_text(embed: dict[str, Any]) -> int:
    """The characters Discord counts against the 6000 of a message's embeds."""
    fields = embed.get("fields") or []
    return (_length(embed.get("title")) + _length(embed.get("description"))
            + sum(_length(f.get("name")) + _length(f.get("value")) for f in fields if isinstance(f, dict))
            + _length((embed.get("footer") or {}).get("text")) + _length((embed.get("author") or {}).get("name")))


def embed_issues(embeds: list[Any], prefix: tuple[str | int, ...] = ()) -> list[Issue]:
    issues: list[Issue] = []
    _limit(issues, (*prefix, "embeds"), embeds, EMBEDS_LIMIT)
    for i, embed in enumerate(embeds):
        if not isinstance(embed, dict):
            continue
        at = (*prefix, "embeds", i)
        for key, limit in EMBED_LIMITS.items():
            _limit(issues, (*at, key), embed.get(key), limit)
        fields = embed.get("fields") or []
        _limit(issues, (*at, "fields"), fields, FIELDS_LIMIT)
        for j, field in enumerate(fields if isinstance(fields, list) else []):
            for key, limit in (("name", FIELD_NAME_LIMIT), ("value", FIELD_VALUE_LIMIT)):
                text = field.get(key) if isinstance(field, dict) else None
                if not isinstance(text, str) or not text.strip():  # Discord refuses an empty name or value
                    issues.append(((*at, "fields", j, key), *REQUIRED))
                else:
                    _limit(issues, (*at, "fields", j, key), text, limit)
        _limit(issues, (*at, "footer", "text"), (embed.get("footer") or {}).get("text"), FOOTER_LIMIT)
        _limit(issues, (*at, "author", "name"), (embed.get("author") or {}).get("name"), AUTHOR_LIMIT)
    if sum(embed_text(e) for e in embeds if isinstance(e, dict)) > EMBED_TOTAL_LIMIT:
        issues.append(((*prefix, "embeds"), "MAX_EMBED_SIZE_EXCEEDED",
                       f"Embed size exceeds maximum size of {EMBED_TOTAL_LIMIT}"))
    return issues


def component_issues(rows: list[Any], prefix: tuple[str | int, ...] = ()) -> list[Issue]:
    """Action rows of buttons and selects (a message without the components-v2 flag)."""
    issues: list[Issue] = []
    _limit(issues, (*prefix, "components"), rows, ROWS_LIMIT)
    seen: set[str] = set()
    for r, row in enumerate(rows):
        at = (*prefix, "components", r)
        if not isinstance(row, dict) or row.get("type") != 1:
            issues.append((at, "UNION_TYPE_CHOICES", "Value of field \"type\" must be one of (1,)."))
            continue
        items = row.get("components") or []
        if not items:
            issues.append(((*at, "components"), *too_short(1)))
        _limit(issues, (*at, "components"), items, ROW_WIDTH)
        if len(items) > 1 and any(isinstance(c, dict) and c.get("type") in SELECTS for c in items):
            issues.append(((*at, "components"), "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                           "The specified component exceeds the maximum width"))
        for c, item in enumerate(items):
            if isinstance(item, dict):
                issues += _item_issues(item, (*at, "components", c), seen)
    return issues


def _custom_id_issues(item: dict[str, Any], at: tuple[str | int, ...], seen: set[str]) -> list[Issue]:
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return [((*at, "custom_id"), *REQUIRED)]
    if len(custom_id) > CUSTOM_ID_LIMIT:
        return [((*at, "custom_id"), *too_long(CUSTOM_ID_LIMIT))]
    if custom_id in seen:
        return [((*at, "custom_id"), "COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id cannot be duplicated")]
    seen.add(custom_id)
    return []


def _item_issues(item: dict[str, Any], at: tuple[str | int, ...], seen: set[str]) -> list[Issue]:
    issues: list[Issue] = []
    kind = item.get("type")
    if kind == 2:  # a button
        style = item.get("style")
        if style == LINK:
            if not item.get("url"):
                issues.append(((*at, "url"), *REQUIRED))
            if "custom_id" in item:
                issues.append(((*at, "custom_id"), "BUTTON_COMPONENT_CUSTOM_ID_NOT_ALLOWED",
                               "A link button cannot have a custom id"))
        elif style != PREMIUM:
            issues += _custom_id_issues(item, at, seen)
        if style != PREMIUM and not item.get("label") and not item.get("emoji"):
            issues.append(((*at, "label"), "BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED",
                           "A button needs a label or an emoji"))
        _limit(issues, (*at, "label"), item.get("label"), BUTTON_LABEL_LIMIT)
    elif kind in SELECTS:
        issues += _custom_id_issues(item, at, seen)
        _limit(issues, (*at, "placeholder"), item.get("placeholder"), PLACEHOLDER_LIMIT)
        if kind == 3:
            issues += _option_issues(item.get("options"), (*at, "options"))
    else:
        issues.append(((*at, "type"), "UNION_TYPE_CHOICES", "An action row holds buttons and select menus only"))
    return issues


def _option_issues(options: Any, at: tuple[str | int, ...]) -> list[Issue]:
    if not isinstance(options, list) or not options:
        return [(at, *too_short(1))]
    issues: list[Issue] = []
    _limit(issues, at, options, OPTIONS_LIMIT)
    values: set[str] = set()
    for o, option in enumerate(options):
        if not isinstance(option, dict):
            continue
        for key in ("label", "value"):
            text = option.get(key)
            if not isinstance(text, str) or not text:
                issues.append(((*at, o, key), *REQUIRED))
            else:
                _limit(issues, (*at, o, key), text, OPTION_TEXT_LIMIT)
        _limit(issues, (*at, o, "description"), option.get("description"), OPTION_TEXT_LIMIT)
        if option.get("value") in values:
            issues.append(((*at, o), "SELECT_COMPONENT_OPTION_VALUE_DUPLICATED",
                           "The specified option value is already used"))
        values.add(option.get("value"))
    return issues


# --- modals ------------------------------------------------------------------------


def modal_issues(data: dict[str, Any], prefix: tuple[str | int, ...] = ("data",)) -> list[Issue]:
    """A modal (interaction callback type 9): its title, rows and text inputs."""
    issues: list[Issue] = []
    title = data.get("title")
    if not isinstance(title, str) or not title:
        issues.append(((*prefix, "title"), *REQUIRED))
    _limit(issues, (*prefix, "title"), title, MODAL_TITLE_LIMIT)
    seen: set[str] = set()
    issues += _custom_id_issues(data, prefix, set())
    rows = data.get("components")
    if not isinstance(rows, list) or not rows:
        return [*issues, ((*prefix, "components"), *too_short(1))]
    _limit(issues, (*prefix, "components"), rows, MODAL_ROWS_LIMIT)
    for r, row in enumerate(rows):
        at = (*prefix, "components", r)
        if not isinstance(row, dict):
            continue
        inputs = [row.get("component")] if row.get("type") == 18 else row.get("components") or []  # 18: a label
        if row.get("type") == 1 and len(inputs) != 1:
            issues.append(((*at, "components"), *(too_short(1) if not inputs else too_long(1))))
        for c, item in enumerate(inputs):
            if not isinstance(item, dict) or item.get("type") != 4:
                continue
            where = (*at, "component") if row.get("type") == 18 else (*at, "components", c)
            issues += _custom_id_issues(item, where, seen)
            if row.get("type") == 1:
                label = item.get("label")
                if not isinstance(label, str) or not label:
                    issues.append(((*where, "label"), *REQUIRED))
                _limit(issues, (*where, "label"), label, TEXT_INPUT_LABEL_LIMIT)
            _limit(issues, (*where, "value"), item.get("value"), TEXT_INPUT_VALUE_LIMIT)
            _limit(issues, (*where, "placeholder"), item.get("placeholder"), TEXT_INPUT_PLACEHOLDER_LIMIT)
            for key, low in (("min_length", 0), ("max_length", 1)):
                number = item.get(key)
                if isinstance(number, int) and not low <= number <= TEXT_INPUT_VALUE_LIMIT:
                    issues.append(((*where, key), "NUMBER_TYPE_MAX" if number > low else "NUMBER_TYPE_MIN",
                                   f"{key} must be from {low} to {TEXT_INPUT_VALUE_LIMIT}."))
    return issues


# --- the published schemas ---------------------------------------------------------


@cache
def _vendored() -> dict[str, Any]:
    return json.loads(SCHEMAS.read_text())


def schema_source() -> dict[str, Any]:
    return _vendored()["source"]


@cache
def _validator(operation: str) -> jsonschema.protocols.Validator | None:
    vendored = _vendored()
    schema = vendored["operations"][operation]["schema"]
    if schema is None:
        return None
    return jsonschema.Draft202012Validator({**schema, "$defs": vendored["$defs"]})


def _branch(schema: dict[str, Any], body: Any) -> dict[str, Any]:
    """In a union told apart by `type` (the interaction callbacks), the branch for this body's type."""
    branches = schema.get("anyOf") or schema.get("oneOf")
    if not branches or not isinstance(body, dict):
        return schema
    matching = [b for b in branches if body.get("type") in ((b.get("properties") or {}).get("type") or {})
                .get("enum", ())]
    return matching[0] if len(matching) == 1 else schema


@cache
def _branch_validator(operation: str, kind: int | str) -> jsonschema.protocols.Validator:
    """The validator for one branch of a union told apart by `type`, made once (a validator over
    the whole vendored document costs milliseconds to build: too much for every request)."""
    validator = _validator(operation)
    assert validator is not None
    schema = _branch(validator.schema, {"type": kind})
    if schema is validator.schema:
        return validator
    return jsonschema.Draft202012Validator({**schema, "$defs": _vendored()["$defs"]})


def schema_issues(operation: str, body: Any) -> list[Issue]:
    """The body checked against the route's schema in Discord's OpenAPI document (`operation` is
    "METHOD /openapi/path"); a route without a body schema wants none."""
    validator = _validator(operation)
    if validator is None:
        return [((), "BASE_TYPE_BAD_TYPE", "This route takes no body")] if body not in (None, {}, b"") else []
    if isinstance(body, dict) and isinstance(body.get("type"), int | str):
        validator = _branch_validator(operation, body["type"])
    errors = list(validator.iter_errors(body))
    if not errors:
        return []
    return [_issue(best_match(errors))]


def _issue(error: ValidationError) -> Issue:
    path: tuple[str | int, ...] = tuple(error.absolute_path)
    value, instance = error.validator_value, error.instance
    match error.validator:
        case "maxLength" | "maxItems" | "maxProperties":
            return path, *too_long(value)
        case "minLength" | "minItems":
            return path, *too_short(value)
        case "required":
            missing = next((key for key in value if isinstance(instance, dict) and key not in instance), "")
            return (*path, missing), *REQUIRED
        case "maximum":
            return path, "NUMBER_TYPE_MAX", f"int value should be less than or equal to {value}."
        case "minimum":
            return path, "NUMBER_TYPE_MIN", f"int value should be greater than or equal to {value}."
        case "enum" | "const":
            return path, "BASE_TYPE_CHOICES", f"Value must be one of {value}."
        case "type":
            return path, "BASE_TYPE_BAD_TYPE", f"Must be of type {value}."
    return path, "SCHEMA_INVALID", error.message[:200]

