"""YAML loading that remembers where every key came from (file and line), ``base:``
inheritance and ``--set key.path=value`` overrides.

mmseg's ``_base_`` and Hydra's overrides are the models: mappings merge recursively, lists and
scalars replace. Unlike them, every value keeps its origin, so a validation error can name the
file and line it came from, including a value inherited from a base suite.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from models.errors import UserError

KeyPath = tuple  # of str (mapping keys) and int (list indices)


class SuiteError(UserError):
    """A problem with a suite file, reported without a traceback (exit code 2)."""

    def __init__(self, message: str, file: str | None = None, key_path: KeyPath = (),
                 line: int | None = None):
        self.message = message
        self.file = file
        self.key_path = tuple(key_path)
        self.line = line
        super().__init__(self.format())

    def format(self) -> str:
        where = self.file or "<suite>"
        if self.line is not None:
            where += f":{self.line}"
        key = format_key_path(self.key_path)
        return f"{where}: {key + ': ' if key else ''}{self.message}"


class SuiteErrors(SuiteError):
    """Several problems found together (validation and preflight report all of them at once);
    ``errors`` keeps each one, ``str()`` gives one line per problem."""

    def __init__(self, errors: list[SuiteError]):
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(first.message, first.file, first.key_path, first.line)

    def format(self) -> str:
        return "\n".join(e.format() for e in self.errors)

    def lines(self) -> list[str]:
        return [str(e) for e in self.errors]


def raise_all(errors: list[SuiteError]) -> None:
    """Raise the one error, or all of them together; nothing when the list is empty."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise SuiteErrors(errors)


def format_key_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass(frozen=True)
class Origin:
    file: str
    line: int | None


class _Loader(yaml.SafeLoader):
    pass


def _scalar(node: yaml.Node) -> Any:
    """A scalar through the standard safe resolver (ints, floats, bools, null, strings)."""
    return _Loader("").construct_object(node, deep=True)


def _construct(node: yaml.Node, file: str, path: KeyPath, origins: dict,
               line: int | None = None) -> Any:
    """Build Python objects; a mapping value's origin is the line of its key."""
    origins[path] = Origin(file, line or node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if key in out:
                raise SuiteError(f"duplicate key {key!r}", file, path + (key,),
                                 key_node.start_mark.line + 1)
            out[key] = _construct(value_node, file, path + (key,), origins,
                                  key_node.start_mark.line + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, file, path + (i,), origins) for i, item in enumerate(node.value)]
    return _scalar(node)


def load_yaml(path: Path) -> tuple[Any, dict[KeyPath, Origin]]:
    """Parse ``path`` into plain Python objects plus the origin of every key path."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SuiteError("file not found", file) from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise SuiteError(f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} cannot be decoded); "
                         f"save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`", file, (),
                         line) from None
    except OSError as exc:
        raise SuiteError(f"cannot read: {exc.strerror}", file) from None
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(f"invalid YAML: {problem}", file, (),
                         mark.line + 1 if mark else None) from None
    origins: dict[KeyPath, Origin] = {}
    if node is None:
        return {}, origins
    data = _construct(node, file, (), origins)
    return data, origins


def deep_merge(base: Any, over: Any, base_origins: dict, over_origins: dict,
               path: KeyPath = ()) -> Any:
    """Merge ``over`` into ``base``: mappings recursively, everything else replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = deep_merge(base.get(key), value, base_origins, over_origins,
                                  path + (key,)) if key in base else value
            if key not in base or not (isinstance(base[key], dict) and isinstance(value, dict)):
                _replace_origins(base_origins, over_origins, path + (key,))
        return out
    _replace_origins(base_origins, over_origins, path)
    return over


def _replace_origins(base_origins: dict, over_origins: dict, path: KeyPath) -> None:
    n = len(path)
    for key in [k for k in base_origins if k[:n] == path]:
        del base_origins[key]
    base_origins.update({k: v for k, v in over_origins.items() if k[:n] == path})


def load_with_bases(path: Path, _chain: tuple = ()) -> tuple[dict, dict[KeyPath, Origin]]:
    """Load a suite file and resolve its ``base:`` chain (paths relative to each file)."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, resolved))
        raise SuiteError(f"base suites form a cycle: {cycle}", str(path), ("base",))
    data, origins = load_yaml(path)
    if not isinstance(data, dict):
        raise SuiteError("a suite must be a mapping of keys (name, grid, train, ...)", str(path),
                         (), 1)
    base_ref = data.pop("base", None)
    base_origin = origins.pop(("base",), None)
    if base_ref is None:
        return data, origins
    if not isinstance(base_ref, str):
        raise SuiteError("base must be a path to another suite file", str(path), ("base",),
                         base_origin.line if base_origin else None)
    base_path = path.parent / base_ref
    if not base_path.is_file():
        raise SuiteError(f"base suite {base_ref!r} not found (looked for {base_path})", str(path),
                         ("base",), base_origin.line if base_origin else None)
    base_data, base_origins = load_with_bases(base_path, (*_chain, resolved))
    # a base's name/description describe the base, not the inheriting suite
    for key in ("name", "description"):
        base_data.pop(key, None)
    merged = deep_merge(base_data, data, base_origins, origins)
    return merged, base_origins


def parse_set(assignments: list[str]) -> list[tuple[KeyPath, Any, str]]:
    """``["train.lr=3e-4", "grid.datasets.0.root=/data"]`` -> [(("train", "lr"), 0.0003, text),
    (("grid", "datasets", 0, "root"), "/data", text)]. A list item is addressed by its index,
    as ``datasets.0`` or ``datasets[0]``."""
    out = []
    for text in assignments:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise SuiteError(f"--set expects key.path=value, got {text!r}", COMMAND_LINE)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        parts: list = []
        for part in re.sub(r"\[(\d+)\]", r".\1", key.strip()).split("."):
            if not part:
                raise SuiteError(f"--set {text!r}: empty key in {key.strip()!r}", COMMAND_LINE)
            parts.append(int(part) if part.isdigit() else part)
        out.append((tuple(parts), value, text))
    return out


#: where a ``--set`` error is reported: the command line, never a line of the suite file
COMMAND_LINE = "command line"


def apply_set(data: dict, origins: dict, assignments: list[tuple[KeyPath, Any, str]]) -> None:
    for path, value, text in assignments:
        where = f"{COMMAND_LINE} (--set {text})"
        node: Any = data
        for depth, part in enumerate(path[:-1]):
            node = _step(node, part, path[depth + 1], path[:depth + 1], where)
        last = path[-1]
        if isinstance(node, list):
            if not isinstance(last, int) or last >= len(node):
                raise SuiteError(_list_problem(path, len(node)), where)
            node[last] = value
        elif isinstance(node, dict):
            node[last] = value
        _replace_origins(origins, {path: Origin(where, None)}, path)
        for depth in range(1, len(path)):  # mappings the assignment created
            origins.setdefault(path[:depth], Origin(where, None))


def _step(node: Any, part, next_part, prefix: KeyPath, where: str) -> Any:
    """One step of a ``--set`` path; creates mappings that do not exist yet, refuses to go
    through a value that is neither a mapping nor a list (``train.lr.max`` with lr a number)."""
    if isinstance(node, list):
        if not isinstance(part, int) or part >= len(node):
            raise SuiteError(_list_problem(prefix, len(node)), where)
        child = node[part]
    else:
        if isinstance(part, int):
            part = str(part)
        child = node.get(part)
        if child is None:
            child = node[part] = {}
    if not isinstance(child, (dict, list)):
        raise SuiteError(f"{format_key_path(prefix)} is {child!r}, not a mapping or a list, so "
                         f"it has no key {next_part!r}; set {format_key_path(prefix)} itself",
                         where)
    return child


def _list_problem(path: KeyPath, length: int) -> str:
    return (f"{format_key_path(path[:-1])} is a list of {length} item(s): address an item by its "
            f"index 0..{length - 1} ({format_key_path(path[:-1])}.0...), got {path[-1]!r}")
