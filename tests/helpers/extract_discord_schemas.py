"""Vendor the request-body schemas of the Discord routes this bot uses.

Discord publishes its HTTP API as an OpenAPI 3.1 document (github.com/discord/discord-api-spec,
`specs/openapi.json`, MIT). This script takes the JSON request-body schema of each route the bot
calls, inlines every `$ref` (a schema that refers to itself stays in `$defs`), drops what a
validator does not need (descriptions, titles, formats, x-discord-* keys) and writes
`discord_schemas.json` beside this file, which the fake Discord of discord_harness.py validates
every request body against (see discord_rules.py).

    python tests/helpers/extract_discord_schemas.py path/to/openapi.json [--commit SHA]

One correction is applied to the published schemas, because the real API is laxer there than
its document: a snowflake (`SnowflakeType`, a string of digits in the document) is also
accepted as a JSON integer, as Discord does and as discord.py sends some of them (recipient_id,
attachment ids). Any other correction belongs here too, with its reason, never in the vendored file.

Pitfall: "description", "title" and "format" are both annotation keywords (dropped) and names
of real fields (an embed's title, a command's description): inside `properties` a key is a
field name and is always kept, or the limits on those fields silently vanish.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "discord_schemas.json"
REPOSITORY = "discord/discord-api-spec"
SPEC_PATH = "specs/openapi.json"

# (method, OpenAPI path): what the bot sends there
OPERATIONS: list[tuple[str, str]] = [
    ("POST", "/channels/{channel_id}/messages"),  # a channel message
    ("PATCH", "/channels/{channel_id}/messages/{message_id}"),  # its edit
    ("POST", "/webhooks/{webhook_id}/{webhook_token}"),  # an interaction followup
    ("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original"),  # the response's edit
    ("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"),  # a followup's edit
    ("POST", "/interactions/{interaction_id}/{interaction_token}/callback"),  # the response
    ("POST", "/users/@me/channels"),  # open a DM
    ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me"),  # react (no body)
    ("PUT", "/applications/{application_id}/commands"),  # global command sync
    ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands"),  # guild command sync
]

DROPPED_KEYS = {"description", "title", "format", "examples", "example", "deprecated", "readOnly", "writeOnly"}
LAX_SNOWFLAKE = {"type": ["string", "integer"], "pattern": "^(0|[1-9][0-9]*)$", "minimum": 0}


class Inliner:
    def __init__(self, schemas: dict[str, Any]) -> None:
        self.schemas = schemas
        self.defs: dict[str, Any] = {}
        self.expanding: list[str] = []

    def schema(self, name: str) -> Any:
        if name == "SnowflakeType":
            return copy.deepcopy(LAX_SNOWFLAKE)
        return self.schemas[name]

    def inline(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[1]
            if name in self.expanding:  # recursive: refer to it in $defs
                if name not in self.defs:
                    self.defs[name] = None  # filled when its expansion finishes
                return {"$ref": f"#/$defs/{name}"}
            self.expanding.append(name)
            try:
                expanded = self.inline(self.schema(name))
            finally:
                self.expanding.pop()
            if name in self.defs:
                self.defs[name] = expanded
            rest = {key: value for key, value in node.items() if key != "$ref"}
            return {**expanded, **self.inline(rest)} if rest else expanded
        return {key: ({name: self.inline(schema) for name, schema in value.items()}  # names, not keywords
                      if key in ("properties", "patternProperties") else self.inline(value))
                for key, value in node.items() if key not in DROPPED_KEYS and not key.startswith("x-")}


def extract(spec: dict[str, Any]) -> dict[str, Any]:
    inliner = Inliner(spec["components"]["schemas"])
    operations: dict[str, Any] = {}
    for method, path in OPERATIONS:
        operation = spec["paths"][path][method.lower()]
        body = (operation.get("requestBody") or {}).get("content", {}).get("application/json")
        key = f"{method} {path}"
        operations[key] = {"operationId": operation.get("operationId"),
                           "schema": inliner.inline(body["schema"]) if body else None}
    return {"operations": operations, "$defs": inliner.defs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("openapi", type=Path, help=f"{SPEC_PATH} of {REPOSITORY}")
    parser.add_argument("--commit", default="", help="the spec repository's commit, recorded in the output")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    arguments = parser.parse_args()
    spec = json.loads(arguments.openapi.read_text())
    vendored = {"source": {"repository": REPOSITORY, "path": SPEC_PATH, "commit": arguments.commit,
                           "title": spec["info"]["title"], "license": spec["info"].get("license", {}).get("name"),
                           "generator": "tests/helpers/extract_discord_schemas.py"},
                **extract(spec)}
    arguments.output.write_text(json.dumps(vendored, separators=(",", ":"), sort_keys=True) + "\n")
    print(f"{arguments.output}: {arguments.output.stat().st_size} bytes, {len(vendored['operations'])} routes, "
          f"{len(vendored['$defs'])} recursive schemas")


if __name__ == "__main__":
    main()
