"""Reading shardplan's input files safely: the helpers every loader shares.

Every reader of user files (topologies, workloads, plans, calibration profiles) goes through
this module, so they all keep the same promises:

* bad input is a :class:`~shardplan.errors.SpecError` naming the file, the key path and (where
  YAML gives one) the line, never a traceback;
* resource limits are explicit (:class:`LoadLimits`): a YAML alias bomb, nesting thousands
  deep, a file of gigabytes, a million hosts or tables stop with a message naming the limit,
  before any work that grows with them;
* strings become enums here (:func:`as_enum`); only validated values travel inward.

The public pieces: :class:`LoadLimits` (and ``DEFAULT_LIMITS``), :func:`read_text`,
:func:`compose_yaml`, :class:`Ctx` (where values come from, for messages), :class:`Reader`
(one mapping: required and optional keys, type checks, unknown keys), the converters
:func:`as_int`, :func:`as_num`, :func:`as_enum`, :func:`as_list`, :func:`kind`, and
:func:`build` (run a validated constructor, its error placed at a key path).
"""

from __future__ import annotations

import difflib
import math
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml
import yaml.composer
import yaml.constructor
import yaml.resolver

from shardplan.errors import LimitError, SpecError

E = TypeVar("E", bound=StrEnum)
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True, slots=True)
class LoadLimits:
    """Resource limits of the loaders. Each stops a malformed or hostile file with a clear
    message instead of a hang or a MemoryError; the defaults are far above real inputs.

    Attributes:
        max_file_bytes: largest file read (a 10,000-table x 1,024-rank plan is about 200 MB).
        max_depth: deepest nesting of YAML/JSON collections (real files: under 10).
        max_yaml_nodes: YAML nodes counted with every alias expanded (a 10,000-table workload
            is about 100,000); counted while composing, before anything is expanded.
        max_yaml_aliases: alias references (``*name``) in one YAML file.
        max_hosts: hosts in a topology (the largest bundled one has 128).
        max_devices: devices (ranks) in a topology (the largest bundled one has 1,024).
        max_tables: tables in a workload (``gen-workload`` writes at most 100,000).
    """

    max_file_bytes: int = 1 << 30
    max_depth: int = 64
    max_yaml_nodes: int = 2_000_000
    max_yaml_aliases: int = 10_000
    max_hosts: int = 4_096
    max_devices: int = 16_384
    max_tables: int = 100_000

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_depth", "max_yaml_nodes", "max_yaml_aliases",
                     "max_hosts", "max_devices", "max_tables"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SpecError(f"{name}={v!r}: must be a positive integer", key_path=name)


DEFAULT_LIMITS = LoadLimits()

#: Longest name (table, feature, workload, topology, host group, device model) the loaders
#: accept: names are printed in tables, messages and plots; real ones are under 100.
MAX_NAME_CHARS = 1_000


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def read_text(path: Path, what: str, limits: LoadLimits = DEFAULT_LIMITS,
              error: type[SpecError] = SpecError) -> str:
    """The text of ``path`` (UTF-8, a leading byte-order mark dropped, as Excel writes one).

    Reads at most ``limits.max_file_bytes`` (so a special file such as ``/dev/zero`` cannot
    hang the reader).

    Raises:
        SpecError (``error``): missing, a directory, unreadable, not UTF-8, or too large.
    """
    try:
        with path.open("rb") as f:
            data = f.read(limits.max_file_bytes + 1)
    except FileNotFoundError:
        raise error(f"{what} file not found; check the path (bundled topologies: "
                    "`shardplan topologies`)", source=str(path)) from None
    except IsADirectoryError:
        raise error(f"expected a {what} file, got a directory", source=str(path)) from None
    except OSError as exc:
        raise error(f"cannot read {what} file: {exc.strerror or exc}", source=str(path)) from None
    if len(data) > limits.max_file_bytes:
        raise LimitError(f"the {what} file is larger than max_file_bytes="
                         f"{limits.max_file_bytes:,} bytes (shardplan.parsing.LoadLimits)",
                         source=str(path))
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise error(f"cannot read {what} file: it is UTF-16 text (its byte-order mark says so); "
                    "save it as UTF-8", source=str(path))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"cannot read {what} file: not UTF-8 text (byte {exc.start}); save it as "
                    "UTF-8", source=str(path)) from None


# ---------------------------------------------------------------------------------------------
# YAML with line numbers and limits
# ---------------------------------------------------------------------------------------------


class _Limits:
    """Counts, while a YAML document is composed, the nodes each node stands for with its
    aliases expanded, the alias references and the nesting depth, and stops at the limits.
    Nothing is expanded before the counts are known, so an alias bomb costs no memory.
    Mixed into a loader before its composer (:class:`_LimitedLoader`)."""

    def _setup(self, limits: LoadLimits, source: str) -> None:
        self.limits, self.source = limits, source
        self.depth = 0
        self.aliases = 0
        self.sizes: dict[int, int] = {}  # id(node) -> nodes it stands for, aliases expanded

    def _fail(self, message: str, mark: Any) -> LimitError:
        return LimitError(message + " (shardplan.parsing.LoadLimits)", source=self.source,
                          line=mark.line + 1 if mark is not None else None)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            self.aliases += 1
            if self.aliases > self.limits.max_yaml_aliases:
                raise self._fail(f"more than max_yaml_aliases={self.limits.max_yaml_aliases:,} "
                                 "alias references", event.start_mark)
            return super().compose_node(parent, index)
        start = self.peek_event().start_mark
        self.depth += 1
        if self.depth > self.limits.max_depth:
            raise self._fail(f"nested deeper than max_depth={self.limits.max_depth}", start)
        node = super().compose_node(parent, index)
        self.depth -= 1
        if isinstance(node, yaml.SequenceNode):
            size = 1 + sum(self.sizes[id(c)] for c in node.value)
        elif isinstance(node, yaml.MappingNode):
            size = 1 + sum(self.sizes[id(k)] + self.sizes[id(v)] for k, v in node.value)
        else:
            size = 1
        if size > self.limits.max_yaml_nodes:
            raise self._fail(f"stands for more than max_yaml_nodes={self.limits.max_yaml_nodes:,} "
                             "nodes once its aliases are expanded", start)
        self.sizes[id(node)] = size
        return node


try:
    import yaml.cyaml
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _LIBYAML = False
else:
    _LIBYAML = bool(getattr(yaml, "__with_libyaml__", False))

if _LIBYAML:
    class _LimitedLoader(_Limits, yaml.composer.Composer, yaml.cyaml.CParser,  # type: ignore[misc]
                         yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
        """libyaml's event parser (about 20x faster than PyYAML's, so that a file near the
        limits is refused in seconds) under PyYAML's composer, which counts."""

        def __init__(self, text: str, limits: LoadLimits, source: str) -> None:
            yaml.cyaml.CParser.__init__(self, text)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            self._setup(limits, source)
else:  # pragma: no cover - PyYAML built without libyaml
    class _LimitedLoader(_Limits, yaml.SafeLoader):  # type: ignore[no-redef]
        """PyYAML's own parser and composer, counting."""

        def __init__(self, text: str, limits: LoadLimits, source: str) -> None:
            yaml.SafeLoader.__init__(self, text)
            self._setup(limits, source)


def compose_yaml(text: str, source: str, limits: LoadLimits = DEFAULT_LIMITS,
                 ) -> tuple[Any, dict[str, int]]:
    """YAML text -> (python value, {key path: 1-based line}).

    Keys must be strings and appear once per mapping; tags the safe loader does not know, or
    scalars it cannot construct, are errors at their line.

    Raises:
        SpecError: a syntax error, a bad key or scalar (with its line).
        LimitError: over ``limits`` (depth, nodes with aliases expanded, aliases).
    """
    loader = None
    try:
        loader = _LimitedLoader(text, limits, source)
        node = loader.get_single_node()
    except LimitError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
        context = getattr(exc, "context", None)
        if "maximum nesting depth" in str(problem):  # libyaml's own depth limit (1,000)
            raise LimitError(f"nested deeper than max_depth={limits.max_depth} "
                             "(shardplan.parsing.LoadLimits)", source=source,
                             line=mark.line + 1 if mark else None) from None
        if context and getattr(exc, "problem", None):
            problem = f"{context}, {problem}"
        line = mark.line + 1 if mark else (text.count("\n", 0, exc.position) + 1
                                           if isinstance(getattr(exc, "position", None), int)
                                           else None)
        raise SpecError(f"YAML syntax error: {problem}; fix the YAML at this line",
                        source=source, line=line) from None
    finally:
        if loader is not None:
            loader.dispose()
    lines: dict[str, int] = {}
    if node is None:
        return None, lines
    constructor = yaml.SafeLoader("")

    def scalar(n: yaml.Node, path: str) -> Any:
        try:
            return constructor.construct_object(n)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            raise SpecError(f"cannot read this value ({n.tag}): {problem}", source=source,
                            key_path=path or None, line=n.start_mark.line + 1) from None

    def walk(n: yaml.Node, path: str) -> Any:
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            out: dict[str, Any] = {}
            for k, v in n.value:
                key = scalar(k, path) if isinstance(k, yaml.ScalarNode) else None
                if not isinstance(key, str):
                    raise SpecError(f"keys must be strings, not {kind(key) if key is not None else 'a collection'}",
                                    source=source, key_path=path or None,
                                    line=k.start_mark.line + 1)
                if key in out:
                    raise SpecError(f"duplicate key {key!r}", source=source,
                                    key_path=path or None, line=k.start_mark.line + 1)
                out[key] = walk(v, f"{path}.{key}" if path else key)
            return out
        if isinstance(n, yaml.SequenceNode):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(n.value)]
        return scalar(n, path)

    return walk(node, ""), lines


def check_depth(value: Any, ctx: Ctx, path: str, limits: LoadLimits = DEFAULT_LIMITS) -> None:
    """Raise LimitError if ``value`` (parsed JSON: dicts and lists) nests deeper than
    ``limits.max_depth``; iterative, so any depth is safe to check."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > limits.max_depth:
            raise LimitError(f"nested deeper than max_depth={limits.max_depth} "
                             "(shardplan.parsing.LoadLimits)", source=ctx.source,
                             key_path=path or None)
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)


# ---------------------------------------------------------------------------------------------
# Mappings, values, enums
# ---------------------------------------------------------------------------------------------


@dataclass
class Ctx:
    """Where values come from, for error messages: the source (file) and the line of each
    key path, and the error class to raise (``SpecError`` or a subclass)."""

    source: str
    lines: dict[str, int] = field(default_factory=dict)
    error: type[SpecError] = SpecError

    def line_of(self, path: str) -> int | None:
        """The line of ``path``, else of the nearest enclosing key that has one."""
        line = self.lines.get(path)
        probe = path
        while line is None and probe:
            if probe.endswith("]"):
                probe = probe[:probe.rindex("[")]
            else:
                probe = probe.rsplit(".", 1)[0] if "." in probe else ""
            line = self.lines.get(probe)
        return line

    def fail(self, path: str, message: str) -> SpecError:
        """The error to raise for ``message`` at key path ``path``."""
        return self.error(message, source=self.source, key_path=path or None,
                          line=self.line_of(path))


class Reader:
    """Reads one mapping: required and optional keys, type checks, and (``done``) the
    unknown-key check, whose message lists every key the mapping may have."""

    def __init__(self, value: Any, path: str, ctx: Ctx, what: str) -> None:
        if not isinstance(value, dict):
            raise ctx.fail(path, f"expected a mapping ({what}), got {kind(value)}")
        self.d, self.path, self.ctx, self.what = value, path, ctx, what
        self.used: set[str] = set()
        self.allowed: dict[str, None] = {}  # keys (or key families) this mapping may have

    def p(self, key: str) -> str:
        """The key path of ``key``."""
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        self.allowed.setdefault(key)
        return key in self.d

    def raw(self, key: str, default: Any = ...) -> Any:
        self.used.add(key)
        self.allowed.setdefault(key)
        if key not in self.d:
            if default is ...:
                raise self.ctx.fail(self.path, f"missing required key {key!r} in {self.what}")
            return default
        return self.d[key]

    def str(self, key: str, default: Any = ...) -> Any:
        v = self.raw(key, default)
        if v is default and default is not ...:
            return v
        if not isinstance(v, str) or not v:
            raise self.ctx.fail(self.p(key), f"expected a non-empty string, got {kind(v)}")
        return v

    def name(self, key: str, default: Any = ...) -> Any:
        """A name at ``key`` (:func:`as_name`: printable, no spaces at its ends, not too
        long)."""
        v = self.raw(key, default)
        if v is default and default is not ...:
            return v
        return as_name(v, self.p(key), self.ctx)

    def text(self, key: str, default: Any = ...) -> Any:
        """Free text at ``key`` (a description): a string with no control characters other
        than newlines and tabs (an escape sequence would reach the terminal)."""
        v = self.str(key, default)
        if isinstance(v, str):
            bad = next((c for c in v if unicodedata.category(c) == "Cc" and c not in "\n\t"),
                       None)
            if bad is not None:
                raise self.ctx.fail(self.p(key), f"contains the control character "
                                                 f"U+{ord(bad):04X}; remove it")
        return v

    def int(self, key: str, default: Any = ..., minimum: int | None = None) -> Any:
        v = self.raw(key, default)
        if v is default and default is not ...:
            return v
        return as_int(v, self.p(key), self.ctx, minimum)

    def num(self, key: str, default: Any = ..., positive: bool = False) -> Any:
        v = self.raw(key, default)
        if v is default and default is not ...:
            return v
        return as_num(v, self.p(key), self.ctx, positive)

    def enum(self, key: str, cls: type[E], default: Any = ...) -> Any:
        v = self.raw(key, default)
        if v is default and default is not ...:
            return v
        return as_enum(v, cls, self.p(key), self.ctx)

    def mapping(self, key: str, what: str, default: Any = ...) -> Reader | None:
        """A Reader over the mapping at ``key`` (None when absent and ``default`` is None)."""
        v = self.raw(key, default)
        if v is None and default is None:
            return None
        return Reader(v, self.p(key), self.ctx, what)

    def list(self, key: str, what: str, default: Any = ...) -> list[Any]:
        return as_list(self.raw(key, default), self.p(key), self.ctx, what)

    def quantity(self, base: str, units: dict[str, float], default: Any = ...) -> Any:
        """Exactly one of ``base_<unit>`` keys; returns the value in base units."""
        self.allowed.setdefault(f"{base}_<{'|'.join(units)}>")
        present = [u for u in units if f"{base}_{u}" in self.d]
        if len(present) > 1:
            keys = ", ".join(f"{base}_{u}" for u in present)
            raise self.ctx.fail(self.path, f"give {base} once, not as {keys}")
        if not present:
            if default is not ...:
                return default
            choices = " or ".join(f"{base}_{u}" for u in units)
            raise self.ctx.fail(self.path, f"missing required key {choices} in {self.what}")
        u = present[0]
        key = f"{base}_{u}"
        self.used.add(key)
        return as_num(self.d[key], self.p(key), self.ctx) * units[u]

    def done(self) -> None:
        """Raise for the first key that no read asked for, listing the allowed ones."""
        unknown = sorted(set(self.d) - self.used)
        if unknown:
            k = unknown[0]
            allowed = ", ".join(self.allowed)
            close = difflib.get_close_matches(k, [a for a in self.allowed if "<" not in a], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise self.ctx.fail(self.p(k), f"unknown key {k!r} in {self.what}{hint} "
                                           f"(allowed keys: {allowed})")


def kind(v: Any) -> str:
    """How a value reads in a message: ``a mapping``, ``a list``, ``float nan``, ..."""
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            type(None): "nothing (null)"}.get(type(v), f"{type(v).__name__} {_short(v)}")


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def as_name(v: Any, path: str, ctx: Ctx, what: str = "a name") -> str:
    """A name at ``path``: a non-empty string of at most :data:`MAX_NAME_CHARS` characters,
    with no control characters (a newline or an escape sequence would break tables, CSV and
    the terminal) and no spaces at its ends (``"a "`` and ``"a"`` would be different tables).
    """
    if not isinstance(v, str) or not v:
        raise ctx.fail(path, f"expected {what} (a non-empty string), got {kind(v)}")
    if len(v) > MAX_NAME_CHARS:
        raise ctx.fail(path, f"{what} of {len(v):,} characters is longer than "
                             f"{MAX_NAME_CHARS:,} (shardplan.parsing.MAX_NAME_CHARS); shorten it")
    bad = next((c for c in v if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
    if bad is not None:
        raise ctx.fail(path, f"{what} {_short(v)} contains the control character "
                             f"U+{ord(bad):04X}; names must be printable")
    if v != v.strip():
        raise ctx.fail(path, f"{what} {_short(v)} has spaces at its ends; remove them")
    return v


def as_int(v: Any, path: str, ctx: Ctx, minimum: int | None = None) -> int:
    """An integer (``12``, ``12.0`` or ``"12"``) at ``path``, at least ``minimum``."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, str):
        try:
            v = int(v.strip())
        except ValueError:
            raise ctx.fail(path, f"expected an integer, got {_short(v)}") from None
    if not isinstance(v, int) or isinstance(v, bool):
        raise ctx.fail(path, f"expected an integer, got {kind(v)}")
    if minimum is not None and v < minimum:
        raise ctx.fail(path, f"must be >= {minimum}, got {v}")
    return v


def as_num(v: Any, path: str, ctx: Ctx, positive: bool = False) -> float:
    """A finite number >= 0 (> 0 with ``positive``) at ``path``; numeric strings accepted."""
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise ctx.fail(path, f"expected a number, got {_short(v)}") from None
    if isinstance(v, int) and not isinstance(v, bool):
        try:
            v = float(v)
        except OverflowError:
            raise ctx.fail(path, "expected a finite number, got an integer too large for a "
                                 "float") from None
    if not isinstance(v, float) or not math.isfinite(v):
        raise ctx.fail(path, f"expected a finite number, got {kind(v)}")
    if v < 0 or (positive and v == 0):
        raise ctx.fail(path, f"must be {'> 0' if positive else '>= 0'}, got {v:g}")
    return v


def as_enum(v: Any, cls: type[E], path: str, ctx: Ctx) -> E:
    """The member of ``cls`` named by string ``v`` (case and surrounding spaces ignored)."""
    if isinstance(v, str):
        try:
            return cls(v.strip().lower())
        except ValueError:
            pass
    allowed = ", ".join(m.value for m in cls)
    if not isinstance(v, str):
        raise ctx.fail(path, f"expected one of {allowed}, got {kind(v)}")
    raise ctx.fail(path, f"unknown value {_short(v)}; expected one of {allowed}")


def as_list(v: Any, path: str, ctx: Ctx, what: str) -> list[Any]:
    """``v`` if it is a list, else an error saying a list of ``what`` was expected."""
    if not isinstance(v, list):
        raise ctx.fail(path, f"expected a list of {what}, got {kind(v)}")
    return v


def build(ctx: Ctx, path: str, make: Callable[[], T]) -> T:
    """Run a validated constructor; its ValueError (``SpecError`` included, unless it already
    names a source) becomes an error at ``path`` of ``ctx``."""
    try:
        return make()
    except SpecError as exc:
        if exc.source:
            raise
        where = f"{exc.key_path}: " if exc.key_path and exc.key_path not in exc.message else ""
        raise ctx.fail(path, where + exc.message) from None
    except ValueError as exc:
        raise ctx.fail(path, str(exc)) from None


__all__ = ["DEFAULT_LIMITS", "MAX_NAME_CHARS", "Ctx", "LoadLimits", "Reader", "as_enum",
           "as_int", "as_list", "as_name",
           "as_num", "build", "check_depth", "compose_yaml", "kind", "read_text"]
