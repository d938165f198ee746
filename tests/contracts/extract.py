"""Extract the request/response schemas the test stand-ins need from the public API specs.

Reads ../shared/specs (beside the clone; $RELANCE_SPECS_DIR overrides) and writes, next to this file:

- jira-v2-subset.json: the JIRA operations the stand-in serves (method, v2 path,
  request schema, success response schema) plus every component schema they reach
  through $ref, converted from OpenAPI 3.0 to JSON Schema (draft 4). v2 comment bodies
  are plain strings (v3 takes Atlassian Document Format), so comments use `CommentV2`.
- sendgrid-mail-send.schema.json: the request body schema of POST /v3/mail/send as a
  self-contained JSON Schema 2020-12 document (every $ref inlined).

sendgrid-webhooks.schema.json, beside them, is written by hand (the spec has no webhooks).

Run from anywhere:  python tests/contracts/extract.py [SPECS_DIR]
The output is deterministic (sorted keys), so a re-run shows up in a diff only when the
specs changed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SPECS_ENV = "RELANCE_SPECS_DIR"

JIRA_SPEC = "jira-platform-v3.openapi.json"
SENDGRID_SPEC = "sendgrid-mail-v3.openapi.json"

# operationId -> (method, v3 path) of what the JIRA stand-in serves under /rest/api/2.
JIRA_OPERATIONS = {
    "getIssue": ("get", "/rest/api/3/issue/{issueIdOrKey}"),
    "editIssue": ("put", "/rest/api/3/issue/{issueIdOrKey}"),
    "getTransitions": ("get", "/rest/api/3/issue/{issueIdOrKey}/transitions"),
    "doTransition": ("post", "/rest/api/3/issue/{issueIdOrKey}/transitions"),
    "getComments": ("get", "/rest/api/3/issue/{issueIdOrKey}/comment"),
    "addComment": ("post", "/rest/api/3/issue/{issueIdOrKey}/comment"),
    # multipart/form-data (part `file`): no JSON request schema; the response lists Attachment objects.
    "addAttachment": ("post", "/rest/api/3/issue/{issueIdOrKey}/attachments"),
    "getPriorities": ("get", "/rest/api/3/priority"),
    "getUser": ("get", "/rest/api/3/user"),
    "getCurrentUser": ("get", "/rest/api/3/myself"),
    "getUsersFromGroup": ("get", "/rest/api/3/group/member"),
    "getStatuses": ("get", "/rest/api/3/status"),
    "getAllStatuses": ("get", "/rest/api/3/project/{projectIdOrKey}/statuses"),
    # Data Center's search (startAt paging); Cloud removed it in 2025 (410 Gone).
    "searchForIssuesUsingJqlPost": ("post", "/rest/api/3/search"),
}
# operationId -> (method, path) taken from the late-2025 spec and served at that very path:
# Cloud's enhanced JQL search (nextPageToken paging), which exists only under /rest/api/3.
# Its schemas are kept apart, named with the JIRA_2025_PREFIX, as they may differ from 2022's.
JIRA_2025_SPEC = "jira-platform-v3-2025.openapi.json"
JIRA_2025_OPERATIONS = {
    "searchAndReconsileIssuesUsingJqlPost": ("post", "/rest/api/3/search/jql"),
}
JIRA_2025_PREFIX = "v2025."
# Extra schemas kept although no operation above references them.
JIRA_EXTRA_SCHEMAS = ["ErrorCollection"]
# In v2 a comment body is a plain string; v3 takes an Atlassian Document Format object.
JIRA_V2_OVERRIDES = {
    "CommentV2": {
        "description": "A comment as /rest/api/2 takes and returns it: `body` is wiki-markup text.",
        "allOf": [{"$ref": "#/components/schemas/Comment"}],
        "properties": {"body": {"type": "string"}},
    },
    "PageOfCommentsV2": {
        "description": "PageOfComments as /rest/api/2 returns it (comment bodies are strings).",
        "allOf": [{"$ref": "#/components/schemas/PageOfComments"}],
        "properties": {"comments": {"type": "array", "items": {"$ref": "#/components/schemas/CommentV2"}}},
    },
}
JIRA_V2_SCHEMA_FOR = {"Comment": "CommentV2", "PageOfComments": "PageOfCommentsV2"}

# Where the published SendGrid schema disagrees with the live API and the official
# library: top-level custom_args is typed "string", but the API takes an object of
# string values (as in personalizations), and sendgrid-python sends a dict.
SENDGRID_OVERRIDES = {
    ("properties", "custom_args"): {
        "type": "object",
        "description": "Values specific to the entire send, carried with the email and its activity data.",
        "additionalProperties": {"type": "string"},
    },
}


def specs_candidates() -> list[Path]:
    """Where the specs may be: $RELANCE_SPECS_DIR if set, else shared/specs beside the clone.

    The clone is taken as the shell reached it ($PWD, which keeps symlinks, when that is the
    clone's root) before the physical path: a clone reached through a symlink resolves to a
    folder that has no shared/ beside it.
    """
    if os.environ.get(SPECS_ENV):
        return [Path(os.environ[SPECS_ENV])]
    clones = [REPO]
    try:
        if os.path.samefile(os.environ.get("PWD", ""), REPO):
            clones.insert(0, Path(os.environ["PWD"]))
    except OSError:
        pass
    return list(dict.fromkeys(clone.parent / "shared" / "specs" for clone in clones))


def find_specs() -> Path | None:
    """The first of specs_candidates() that is a folder, or None."""
    return next((path for path in specs_candidates() if path.is_dir()), None)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _refs(node: Any) -> set[str]:
    """Names of the component schemas `node` refers to directly."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/components/schemas/"):
                found.add(value.rsplit("/", 1)[1])
            else:
                found |= _refs(value)
    elif isinstance(node, list):
        for item in node:
            found |= _refs(item)
    return found


def _closure(schemas: dict[str, Any], roots: set[str]) -> set[str]:
    """Every schema name reachable from `roots` through $ref (roots included)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_refs(schemas[name]) - seen)
    return seen


def _openapi30_to_jsonschema(node: Any) -> Any:
    """Rewrite OpenAPI 3.0 schema dialect into plain JSON Schema.

    `nullable: true` becomes a "null" type (or an anyOf with null when there is no
    type); the documentation-only keywords `example` and `xml` are dropped.
    """
    if isinstance(node, list):
        return [_openapi30_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _openapi30_to_jsonschema(v) for k, v in node.items() if k not in ("example", "xml", "nullable")}
    if node.get("nullable") is True:
        if "type" in out:
            out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def _json_schema_of(content: dict[str, Any] | None) -> Any:
    return (content or {}).get("application/json", {}).get("schema")


def _v2(schema: Any) -> Any:
    """Point references to v3-only shapes at their v2 counterparts."""
    if isinstance(schema, dict):
        out = {k: _v2(v) for k, v in schema.items()}
        ref = out.get("$ref", "")
        name = ref.rsplit("/", 1)[-1]
        if name in JIRA_V2_SCHEMA_FOR:
            out["$ref"] = f"#/components/schemas/{JIRA_V2_SCHEMA_FOR[name]}"
        return out
    if isinstance(schema, list):
        return [_v2(item) for item in schema]
    return schema


def _prefixed(schema: Any) -> Any:
    """``schema`` with its component references renamed with JIRA_2025_PREFIX."""
    if isinstance(schema, dict):
        out = {k: _prefixed(v) for k, v in schema.items()}
        if isinstance(out.get("$ref"), str) and out["$ref"].startswith("#/components/schemas/"):
            out["$ref"] = "#/components/schemas/" + JIRA_2025_PREFIX + out["$ref"].rsplit("/", 1)[1]
        return out
    if isinstance(schema, list):
        return [_prefixed(item) for item in schema]
    return schema


def _operation(spec: dict[str, Any], op_id: str, method: str, path: str, served_at: str, convert) -> dict[str, Any]:
    """One operation of `spec`: method, the path the stand-in serves it at, request and success response
    schemas (passed through `convert`)."""
    op = spec["paths"][path][method]
    assert op["operationId"] == op_id, (op_id, op["operationId"])
    request = _json_schema_of(op.get("requestBody", {}).get("content"))
    success = sorted(code for code in op["responses"] if code.startswith("2"))[0]
    response = _json_schema_of(op["responses"][success].get("content"))
    return {
        "method": method.upper(),
        "path": served_at,
        "v3_path": path,
        "request": convert(request),
        "response": {"status": int(success), "schema": convert(response)},
    }


def extract_jira(spec_path: Path) -> dict[str, Any]:
    """Build the JIRA v2 subset document (see module docstring)."""
    spec = json.loads(spec_path.read_text())
    schemas = spec["components"]["schemas"]
    operations: dict[str, Any] = {}
    for op_id, (method, path) in JIRA_OPERATIONS.items():
        operations[op_id] = _operation(spec, op_id, method, path, path.replace("/rest/api/3/", "/rest/api/2/"), _v2)
    roots = _refs(operations) | _refs(JIRA_V2_OVERRIDES) | set(JIRA_EXTRA_SCHEMAS)
    roots -= set(JIRA_V2_OVERRIDES)
    kept = {name: _openapi30_to_jsonschema(schemas[name]) for name in sorted(_closure(schemas, roots))}
    kept.update(copy.deepcopy(JIRA_V2_OVERRIDES))
    sources = {}
    newer = spec_path.parent / JIRA_2025_SPEC
    if newer.is_file():
        later = json.loads(newer.read_text())
        later_schemas = later["components"]["schemas"]
        for op_id, (method, path) in JIRA_2025_OPERATIONS.items():
            operations[op_id] = _operation(later, op_id, method, path, path, _prefixed)
        later_roots = set()
        for method, path in JIRA_2025_OPERATIONS.values():
            op = later["paths"][path][method]
            later_roots |= _refs(op.get("requestBody", {}).get("content")) | _refs(op["responses"])
        for name in sorted(_closure(later_schemas, later_roots)):
            kept[JIRA_2025_PREFIX + name] = _prefixed(_openapi30_to_jsonschema(later_schemas[name]))
        sources[JIRA_2025_SPEC] = {"title": later["info"]["title"], "version": later["info"].get("version"),
                                   "openapi": later["openapi"], "sha256": _sha256(newer)}
    return {
        "sources_2025": sources,
        "$comment": "Generated by tests/contracts/extract.py from the JIRA Cloud platform OpenAPI spec; do not edit.",
        "source": {
            "file": spec_path.name,
            "title": spec["info"]["title"],
            "version": spec["info"].get("version"),
            "openapi": spec["openapi"],
            "sha256": _sha256(spec_path),
        },
        "dialect": "http://json-schema.org/draft-04/schema#",
        "operations": operations,
        "components": {"schemas": kept},
    }


def _inline_refs(node: Any, root: dict[str, Any], stack: tuple[str, ...] = ()) -> Any:
    """Return `node` with every local $ref replaced by (a copy of) its target.

    Keywords next to a $ref (allowed in JSON Schema 2020-12) are merged over the
    target; on a clash the two are combined with allOf so neither is lost.
    """
    if isinstance(node, list):
        return [_inline_refs(item, root, stack) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/") or ref in stack:
            raise ValueError(f"cannot inline $ref {ref!r} (external or recursive)")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        resolved = _inline_refs(target, root, (*stack, ref))
        siblings = {k: _inline_refs(v, root, stack) for k, v in node.items() if k != "$ref"}
        if any(k in resolved and resolved[k] != v for k, v in siblings.items()):
            return {**siblings, "allOf": [resolved]}
        return {**resolved, **siblings}
    return {k: _inline_refs(v, root, stack) for k, v in node.items()}


def extract_sendgrid(spec_path: Path) -> dict[str, Any]:
    """Build the self-contained schema of the POST /v3/mail/send request body."""
    spec = json.loads(spec_path.read_text())
    body = spec["paths"]["/v3/mail/send"]["post"]["requestBody"]
    body = _inline_refs(body, spec)
    schema = _inline_refs(body["content"]["application/json"]["schema"], spec)
    for path, replacement in SENDGRID_OVERRIDES.items():
        parent = schema
        for part in path[:-1]:
            parent = parent[part]
        parent[path[-1]] = replacement
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": (
            f"Generated by tests/contracts/extract.py from {spec_path.name} "
            f"({spec['info']['title']} {spec['info'].get('version')}, sha256 {_sha256(spec_path)}), "
            "request body of POST /v3/mail/send with every $ref inlined; do not edit."
        ),
        **schema,
    }


def _write(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size} bytes)")


def main(argv: list[str]) -> int:
    specs = Path(argv[1]) if len(argv) > 1 else find_specs()
    if specs is None or not specs.is_dir():
        looked = [specs] if specs else specs_candidates()
        print(f"specs directory not found: {', '.join(map(str, looked))}", file=sys.stderr)
        return 1
    _write(HERE / "jira-v2-subset.json", extract_jira(specs / JIRA_SPEC))
    _write(HERE / "sendgrid-mail-send.schema.json", extract_sendgrid(specs / SENDGRID_SPEC))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
