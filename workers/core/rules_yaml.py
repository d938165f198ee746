"""The rules file's YAML: read exactly as ``yaml.safe_load`` reads it, with the line of every part.

Anchors, aliases and merge keys (``<<: *base``) work as in ``yaml.safe_load``. What a rules
file cannot mean is refused with a line-numbered problem: duplicate keys, keys that are
not names (``1``, ``null``, ``true``, a date, a list), tags ``safe_load`` refuses, and
nesting deeper than MAX_DEPTH.
"""

from __future__ import annotations

import datetime

import yaml
from yaml.constructor import ConstructorError
from yaml.composer import ComposerError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..exceptions import RulesError

MAX_DEPTH = 64          # a rules file nests about 6 deep; this bounds the composer's recursion

_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"
_KINDS = {type(None): "null", bool: "true/false", int: "a number", float: "a number",
          datetime.date: "a date", datetime.datetime: "a date and time", bytes: "binary data"}


class _Loader(yaml.SafeLoader):
    """SafeLoader that bounds nesting and reports bad scalars (like ``2020-13-45``) as YAML errors."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, AttributeError, OverflowError) as e:
            # PyYAML lets these escape from the timestamp, int, float and binary constructors.
            what = repr(node.value) if isinstance(node, ScalarNode) else "this value"
            why = f": {e}" if type(e) is ValueError else ""    # e.g. "month must be in 1..12"
            raise ConstructorError(None, None, f"{what} is not a valid {node.tag.rsplit(':', 1)[-1]}{why}",
                                   node.start_mark) from None


def where(path) -> str:
    """A path like ``("rules", 0, "do")`` as the file's reader would name it: ``rules[0].do``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "file"


def _line(node: Node) -> int:
    return node.start_mark.line + 1


class YamlDocument:
    """The data ``yaml.safe_load`` would return, and where each part of it is written."""

    def __init__(self, data, root: Node | None, keys: dict[int, str]):
        self.data = data
        self._root = root
        self._keys = keys           # id(key node) -> its name

    def line_of(self, path) -> int:
        """The line of the deepest part of ``path`` found in the file (1 if none).

        A mapping entry's line is its key's; a list item's is its first line. A part
        reached through an alias or a merge key is where the anchored value is written.
        """
        node = self._root
        line = _line(node) if node is not None else 1
        for part in path:
            if isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                node = node.value[part]
                line = _line(node)
            elif isinstance(node, MappingNode) and isinstance(part, str):
                # Merged entries come first in a constructed mapping and the last one wins, as in a dict.
                pair = next(((k, v) for k, v in reversed(node.value) if self._keys.get(id(k)) == part), None)
                if pair is None:
                    break
                line, node = _line(pair[0]), pair[1]
            else:
                break
        return line


def _key_problem(loader, key_node: Node) -> tuple[str | None, str | None]:
    """(name, None) for a key that is a name, else (None, why not)."""
    if not isinstance(key_node, ScalarNode):
        return None, f"a key must be a name, not a {'list' if isinstance(key_node, SequenceNode) else 'mapping'}"
    if key_node.tag == _VALUE_TAG:      # a bare `=` key: safe_load reads it as the text "="
        key_node.tag = "tag:yaml.org,2002:str"
    key = loader.construct_object(key_node)
    if isinstance(key, str):
        return key, None
    kind = _KINDS.get(type(key), type(key).__name__)
    return None, f"key {key_node.value!r} is read as {kind}, not a name: quote it if it is one"


def _index_keys(loader, root: Node) -> tuple[dict[int, str], list[tuple[int, str]]]:
    """Name every mapping key once (aliases are not walked again); list keys that are not names and duplicates."""
    keys: dict[int, str] = {}
    problems: list[tuple[int, str]] = []
    seen: set[int] = set()
    todo = [(root, ())]
    while todo:
        node, path = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, SequenceNode):
            todo.extend((child, path + (i,)) for i, child in enumerate(node.value))
        elif isinstance(node, MappingNode):
            names: set[str] = set()
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    key, problem = "<<", None
                else:
                    key, problem = _key_problem(loader, key_node)
                if problem:
                    problems.append((_line(key_node), f"{where(path)}: {problem}"))
                    continue
                if key in names:
                    problems.append((_line(key_node), f"{where(path + (key,))}: duplicate key"))
                names.add(key)
                keys[id(key_node)] = key
                todo.append((value_node, path + (key,)))
    problems.sort(key=lambda p: p[0])
    return keys, problems


def read_yaml(text: str, source) -> YamlDocument:
    """Read ``text`` as ``yaml.safe_load`` does; raise RulesError for what a rules file cannot mean.

    Every problem reads ``<line>: <where>: <problem>``. Raises nothing but RulesError.
    """
    loader = None
    try:
        loader = _Loader(text)
        root = loader.get_single_node()
        if root is None:
            return YamlDocument(None, None, {})
        keys, problems = _index_keys(loader, root)
        if problems:
            raise RulesError(source, [f"{line}: {message}" for line, message in problems])
        return YamlDocument(loader.construct_document(root), root, keys)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise RulesError(source, [f"{mark.line + 1 if mark else 1}: invalid YAML: {e.problem or e.context}"]) from None
    except yaml.reader.ReaderError as e:     # a character YAML does not allow: it has a position, not a line
        line = text.count("\n", 0, e.position) + 1
        raise RulesError(source, [f"{line}: invalid YAML: character U+{e.character:04X} is not allowed"]) from None
    finally:
        if loader is not None:
            loader.dispose()
