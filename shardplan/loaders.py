"""Parsing: topology and workload YAML, workload CSV, and their dict forms.

Parsing is kept apart from validation: this module reads text, checks keys and types,
converts units and strings into enums, then calls the validated constructors of
:mod:`shardplan.types`. Every error names the file, the key path and (where YAML gives
one) the line, as ``SpecError``.

Quantities accept several units; the unit is part of the key:

* capacities: ``<name>_bytes``, ``<name>_gib`` (2**30), ``<name>_gb`` (1e9)
* bandwidths: ``<name>_bytes_per_s``, ``<name>_gbytes_per_s`` (1e9 B/s), ``<name>_gbits_per_s``
* latencies: ``<name>_s``, ``<name>_us``
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import yaml

from shardplan.errors import SpecError, TopologyError
from shardplan.types import (
    AccessSkew,
    BatchScope,
    DeviceModel,
    DType,
    HostGroup,
    HostSpec,
    IdOrder,
    Link,
    LinkType,
    Mode,
    NetworkType,
    Optimizer,
    PlacementKind,
    ShardingType,
    TableConstraints,
    TableSpec,
    Topology,
    Workload,
)

E = TypeVar("E", bound=StrEnum)

BUNDLED_PACKAGE = "shardplan.topologies"
DEFAULT_TOPOLOGY = "dgx-h100-2x8"


# ---------------------------------------------------------------------------------------------
# YAML with line numbers
# ---------------------------------------------------------------------------------------------


def _compose(text: str, source: str) -> tuple[Any, dict[str, int]]:
    """YAML text -> (python value, {key path: line}). Raises SpecError on syntax errors."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(
            f"YAML syntax error: {problem}; fix the YAML at this line",
            source=source,
            line=mark.line + 1 if mark else None,
        ) from None
    lines: dict[str, int] = {}
    if node is None:
        return None, lines
    constructor = yaml.SafeLoader("")

    def walk(n: yaml.Node, path: str) -> Any:
        lines[path] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            out: dict[str, Any] = {}
            for k, v in n.value:
                key = constructor.construct_object(k)
                if not isinstance(key, str):
                    raise SpecError(f"keys must be strings, not {key!r}", source=source,
                                    key_path=path or None, line=k.start_mark.line + 1)
                if key in out:
                    raise SpecError(f"duplicate key {key!r}", source=source,
                                    key_path=path or None, line=k.start_mark.line + 1)
                out[key] = walk(v, f"{path}.{key}" if path else key)
            return out
        if isinstance(n, yaml.SequenceNode):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(n.value)]
        return constructor.construct_object(n)

    return walk(node, ""), lines


@dataclass
class _Ctx:
    """Where values come from, for error messages."""

    source: str
    lines: dict[str, int]
    error: type[SpecError] = SpecError

    def fail(self, path: str, message: str) -> SpecError:
        line = self.lines.get(path)
        probe = path
        while line is None and probe:  # fall back to the nearest enclosing key with a line
            probe = probe.rsplit(".", 1)[0] if "." in probe else ""
            line = self.lines.get(probe)
        return self.error(message, source=self.source, key_path=path or None, line=line)


class _Reader:
    """Reads one mapping: required and optional keys, type checks, unknown-key check."""

    def __init__(self, value: Any, path: str, ctx: _Ctx, what: str) -> None:
        if not isinstance(value, dict):
            raise ctx.fail(path, f"expected a mapping ({what}), got {_kind(value)}")
        self.d, self.path, self.ctx, self.what = value, path, ctx, what
        self.used: set[str] = set()

    def p(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.d

    def raw(self, key: str, default: Any = ...) -> Any:
        self.used.add(key)
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
            raise self.ctx.fail(self.p(key), f"expected a non-empty string, got {_kind(v)}")
        return v

    def int(self, key: str, default: Any = ..., minimum: int | None = None) -> Any:
        v = self.raw(key, default)
        if v is default and default is not ...:
            return v
        return _as_int(v, self.p(key), self.ctx, minimum)

    def num(self, key: str, default: Any = ..., positive: bool = False) -> Any:
        v = self.raw(key, default)
        if v is default and default is not ...:
            return v
        return _as_num(v, self.p(key), self.ctx, positive)

    def enum(self, key: str, cls: type[E], default: Any = ...) -> Any:
        v = self.raw(key, default)
        if v is default and default is not ...:
            return v
        return _as_enum(v, cls, self.p(key), self.ctx)

    def quantity(self, base: str, units: dict[str, float], default: Any = ...) -> Any:
        """Exactly one of ``base_<unit>`` keys; returns the value in base units."""
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
        return self.num(f"{base}_{u}", positive=False) * units[u]

    def done(self) -> None:
        unknown = sorted(set(self.d) - self.used)
        if unknown:
            k = unknown[0]
            allowed = ", ".join(sorted(self.used))
            raise self.ctx.fail(self.p(k), f"unknown key {k!r} in {self.what}; allowed keys: {allowed}")


def _kind(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            type(None): "nothing (null)"}.get(type(v), f"{type(v).__name__} {v!r}")


def _as_int(v: Any, path: str, ctx: _Ctx, minimum: int | None = None) -> int:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, str):
        try:
            v = int(v.strip())
        except ValueError:
            raise ctx.fail(path, f"expected an integer, got {v!r}") from None
    if not isinstance(v, int) or isinstance(v, bool):
        raise ctx.fail(path, f"expected an integer, got {_kind(v)}")
    if minimum is not None and v < minimum:
        raise ctx.fail(path, f"must be >= {minimum}, got {v}")
    return v


def _as_num(v: Any, path: str, ctx: _Ctx, positive: bool = False) -> float:
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise ctx.fail(path, f"expected a number, got {v!r}") from None
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise ctx.fail(path, f"expected a finite number, got {_kind(v)}")
    if v < 0 or (positive and v == 0):
        raise ctx.fail(path, f"must be {'> 0' if positive else '>= 0'}, got {v}")
    return v


def _as_enum(v: Any, cls: type[E], path: str, ctx: _Ctx) -> E:
    if isinstance(v, str):
        try:
            return cls(v.strip().lower())
        except ValueError:
            pass
    allowed = ", ".join(m.value for m in cls)
    if not isinstance(v, str):
        raise ctx.fail(path, f"expected one of {allowed}, got {_kind(v)}")
    raise ctx.fail(path, f"unknown value {v!r}; expected one of {allowed}")


def _list(v: Any, path: str, ctx: _Ctx, what: str) -> list[Any]:
    if not isinstance(v, list):
        raise ctx.fail(path, f"expected a list of {what}, got {_kind(v)}")
    return v


def _build(ctx: _Ctx, path: str, make: Callable[[], Any]) -> Any:
    """Run a validated constructor; turn its ValueError into a SpecError at ``path``."""
    try:
        return make()
    except ValueError as exc:
        if isinstance(exc, SpecError):
            raise
        raise ctx.fail(path, str(exc)) from None


BYTES = {"bytes": 1.0, "gib": float(2**30), "gb": 1e9, "tib": float(2**40)}
BANDWIDTH = {"bytes_per_s": 1.0, "gbytes_per_s": 1e9, "gbits_per_s": 1e9 / 8}
LATENCY = {"s": 1.0, "us": 1e-6}


# ---------------------------------------------------------------------------------------------
# Workload
# ---------------------------------------------------------------------------------------------


def _table(value: Any, path: str, ctx: _Ctx, default_dtype: DType) -> TableSpec:
    r = _Reader(value, path, ctx, "a table")
    name = r.str("name")
    rows = r.int("num_embeddings")
    dim = r.int("embedding_dim")
    pf = r.num("pooling_factor", 1.0)
    feats = r.raw("features", None)
    if feats is not None:
        feats = tuple(str(f) for f in _list(feats, r.p("features"), ctx, "feature names"))
    dtype = r.enum("dtype", DType, default_dtype)
    opt = r.enum("optimizer", Optimizer, None)
    access = None
    if r.has("access"):
        a = _Reader(r.raw("access"), r.p("access"), ctx, "an access skew")
        curve = a.raw("hit_curve", None)
        if curve is not None:
            cpath = a.p("hit_curve")
            pts = []
            for i, pt in enumerate(_list(curve, cpath, ctx, "[cache_ratio, hit_rate] pairs")):
                pair = _list(pt, f"{cpath}[{i}]", ctx, "a [cache_ratio, hit_rate] pair")
                if len(pair) != 2:
                    raise ctx.fail(f"{cpath}[{i}]", f"needs two numbers [cache_ratio, hit_rate], "
                                   f"got {len(pair)}")
                pts.append((_as_num(pair[0], f"{cpath}[{i}][0]", ctx),
                            _as_num(pair[1], f"{cpath}[{i}][1]", ctx)))
            curve = tuple(pts)
        access = _build(ctx, a.path, lambda: AccessSkew(
            zipf_exponent=a.num("zipf_exponent", None),
            hot_row_fraction=a.num("hot_row_fraction", None),
            hot_access_fraction=a.num("hot_access_fraction", None),
            id_order=a.enum("id_order", IdOrder, IdOrder.HASHED),
            hit_curve=curve))
        a.done()
    cons = TableConstraints()
    if r.has("constraints"):
        cons = _constraints(r.raw("constraints"), r.p("constraints"), ctx)
    r.done()
    for key, v, ok, why in (
        ("num_embeddings", rows, rows > 0, "rows must be a positive integer"),
        ("embedding_dim", dim, dim > 0, "the embedding dimension must be a positive integer"),
        ("pooling_factor", pf, pf > 0, "the mean ids per sample must be > 0"),
    ):
        if not ok:
            raise ctx.fail(r.p(key), f"{why}, got {v}")
    return _build(ctx, path, lambda: TableSpec(
        name=name, num_embeddings=rows, embedding_dim=dim, pooling_factor=float(pf),
        features=feats or (), dtype=dtype, optimizer=opt, access=access, constraints=cons))


def _constraints(value: Any, path: str, ctx: _Ctx) -> TableConstraints:
    r = _Reader(value, path, ctx, "table constraints")

    def enums(key: str, cls: type[E]) -> tuple[E, ...] | None:
        v = r.raw(key, None)
        if v is None:
            return None
        return tuple(_as_enum(x, cls, f"{r.p(key)}[{i}]", ctx)
                     for i, x in enumerate(_list(v, r.p(key), ctx, cls.__name__)))

    st = enums("sharding_types", ShardingType)
    pl = enums("placements", PlacementKind)
    pinned = r.raw("pinned_ranks", None)
    if pinned is not None:
        pinned = tuple(_as_int(x, f"{r.p('pinned_ranks')}[{i}]", ctx, 0)
                       for i, x in enumerate(_list(pinned, r.p("pinned_ranks"), ctx, "ranks")))
    mcw = r.int("min_column_shard_width", None, minimum=1)
    r.done()
    return _build(ctx, path, lambda: TableConstraints(
        sharding_types=st, placements=pl, pinned_ranks=pinned, min_column_shard_width=mcw))


def workload_from_dict(value: Any, source: str = "<workload>", lines: dict[str, int] | None = None,
                       path: str = "") -> Workload:
    """A workload from its parsed YAML/JSON mapping. Raises SpecError."""
    ctx = _Ctx(source, lines or {})
    r = _Reader(value, path, ctx, "a workload")
    name = r.str("name", Path(source).stem if source and not source.startswith("<") else "workload")
    r.str("description", "")
    src = r.str("source", "")
    batch = r.int("batch_size")
    if batch <= 0:
        raise ctx.fail(r.p("batch_size"), f"must be a positive integer, got {batch}")
    scope = r.enum("batch_scope", BatchScope, BatchScope.PER_RANK)
    mode = r.enum("mode", Mode, Mode.TRAINING)
    dopt = r.enum("default_optimizer", Optimizer, Optimizer.ROWWISE_ADAGRAD)
    ddtype = r.enum("default_dtype", DType, DType.FP32)
    tables_raw = _list(r.raw("tables"), r.p("tables"), ctx, "tables")
    if not tables_raw:
        raise ctx.fail(r.p("tables"), "the workload has no tables; list at least one")
    tables = tuple(_table(t, f"{r.p('tables')}[{i}]", ctx, ddtype) for i, t in enumerate(tables_raw))
    _check_unique(tables, r.p("tables"), ctx)
    groups = {}
    for key in ("colocate", "separate"):
        raw = _list(r.raw(key, []), r.p(key), ctx, "groups of table names")
        groups[key] = tuple(
            tuple(str(x) for x in _list(g, f"{r.p(key)}[{i}]", ctx, "table names"))
            for i, g in enumerate(raw))
    r.done()
    return _build(ctx, path, lambda: Workload(
        name=name, tables=tables, batch_size=batch, batch_scope=scope, mode=mode,
        default_optimizer=dopt, colocate=groups["colocate"], separate=groups["separate"],
        source=src))


def _check_unique(tables: Iterable[TableSpec], path: str, ctx: _Ctx) -> None:
    seen: dict[str, int] = {}
    for i, t in enumerate(tables):
        if t.name in seen:
            raise ctx.fail(f"{path}[{i}].name",
                           f"duplicate table name {t.name!r} (also tables[{seen[t.name]}]); "
                           "table names must be unique")
        seen[t.name] = i


CSV_REQUIRED = ("name", "num_embeddings", "embedding_dim", "pooling_factor")
CSV_OPTIONAL = ("dtype", "optimizer", "features", "zipf_exponent", "id_order")
CSV_BATCH_SIZE = 512  # a CSV carries no batch: this one, per rank, training


def workload_from_csv(text: str, source: str = "<csv>", *, batch_size: int = CSV_BATCH_SIZE,
                      batch_scope: BatchScope = BatchScope.PER_RANK, mode: Mode = Mode.TRAINING,
                      default_optimizer: Optimizer = Optimizer.ROWWISE_ADAGRAD) -> Workload:
    """A workload from CSV with header ``name,num_embeddings,embedding_dim,pooling_factor``
    (optional columns: dtype, optimizer, features separated by ``;`` or ``|``, zipf_exponent,
    id_order: ``hashed`` or ``frequency``, with zipf_exponent)."""
    ctx = _Ctx(source, {})
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ctx.fail("", "the CSV is empty; it needs the header "
                       + ",".join(CSV_REQUIRED)) from None
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        raise ctx.fail("header", f"missing column(s) {', '.join(missing)}; the header must "
                       f"include {','.join(CSV_REQUIRED)}")
    unknown = [c for c in header if c not in CSV_REQUIRED + CSV_OPTIONAL]
    if unknown:
        raise ctx.fail("header", f"unknown column {unknown[0]!r}; allowed: "
                       f"{', '.join(CSV_REQUIRED + CSV_OPTIONAL)}")
    tables = []
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise SpecError(f"expected {len(header)} cells, got {len(row)}", source=source,
                            line=lineno)
        cells = dict(zip(header, (c.strip() for c in row)))
        lctx = _Ctx(source, {f"row {lineno - 1}.{c}": lineno for c in header} | {f"row {lineno - 1}": lineno})
        rec: dict[str, Any] = {}
        for col in header:
            val = cells[col]
            if col == "features":
                if val:
                    rec["features"] = [f for f in val.replace("|", ";").split(";") if f]
            elif col in ("dtype", "optimizer"):
                if val:
                    rec[col] = val
            elif col in ("num_embeddings", "embedding_dim"):
                rec[col] = _as_int(val, f"row {lineno - 1}.{col}", lctx)
            elif col == "pooling_factor":
                rec[col] = _as_num(val, f"row {lineno - 1}.{col}", lctx)
            elif col == "zipf_exponent":
                if val:
                    rec.setdefault("access", {})["zipf_exponent"] = _as_num(
                        val, f"row {lineno - 1}.{col}", lctx)
            elif col == "id_order":
                if val:
                    rec.setdefault("access", {})["id_order"] = val
            else:
                rec[col] = val
        tables.append(_table(rec, f"row {lineno - 1}", lctx, DType.FP32))
    if not tables:
        raise ctx.fail("", "the CSV has a header but no tables; add at least one row")
    _check_unique(tables, "rows", ctx)
    return Workload(name=Path(source).stem, tables=tuple(tables), batch_size=batch_size,
                    batch_scope=batch_scope, mode=mode, default_optimizer=default_optimizer,
                    source=source)


def workload_to_dict(w: Workload) -> dict[str, Any]:
    """The YAML/JSON form of a workload; ``workload_from_dict`` reads it back equal."""
    def table(t: TableSpec) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": t.name, "num_embeddings": t.num_embeddings, "embedding_dim": t.embedding_dim,
            "pooling_factor": t.pooling_factor, "features": list(t.features), "dtype": t.dtype.value,
        }
        if t.optimizer is not None:
            d["optimizer"] = t.optimizer.value
        if t.access is not None:
            a = t.access
            d["access"] = {k: getattr(a, k) for k in
                           ("zipf_exponent", "hot_row_fraction", "hot_access_fraction")
                           if getattr(a, k) is not None}
            if a.id_order is not IdOrder.HASHED:
                d["access"]["id_order"] = a.id_order.value
            if a.hit_curve is not None:
                d["access"]["hit_curve"] = [list(p) for p in a.hit_curve]
        c = t.constraints
        cons: dict[str, Any] = {}
        if c.sharding_types is not None:
            cons["sharding_types"] = [s.value for s in c.sharding_types]
        if c.placements is not None:
            cons["placements"] = [p.value for p in c.placements]
        if c.pinned_ranks is not None:
            cons["pinned_ranks"] = list(c.pinned_ranks)
        if c.min_column_shard_width is not None:
            cons["min_column_shard_width"] = c.min_column_shard_width
        if cons:
            d["constraints"] = cons
        return d

    d: dict[str, Any] = {
        "name": w.name, "batch_size": w.batch_size, "batch_scope": w.batch_scope.value,
        "mode": w.mode.value, "default_optimizer": w.default_optimizer.value,
        "tables": [table(t) for t in w.tables],
    }
    if w.source:
        d["source"] = w.source
    if w.colocate:
        d["colocate"] = [list(g) for g in w.colocate]
    if w.separate:
        d["separate"] = [list(g) for g in w.separate]
    return d


# ---------------------------------------------------------------------------------------------
# Topology
# ---------------------------------------------------------------------------------------------


def _link(value: Any, path: str, ctx: _Ctx, cls: type[E], network: bool) -> Link:
    r = _Reader(value, path, ctx, "a network" if network else "an intra-host link")
    typ = r.enum("type", cls)
    if network and r.has("nics_per_host"):
        nics = r.int("nics_per_host", minimum=1)
        bw = nics * r.quantity("nic_bandwidth", BANDWIDTH)
    else:
        bw = r.quantity("bandwidth", BANDWIDTH)
    lat = r.quantity("latency", LATENCY, 0.0)
    r.done()
    if bw <= 0:
        raise ctx.fail(path, "bandwidth must be > 0")
    return _build(ctx, path, lambda: Link(type=typ, bandwidth_bytes_per_s=bw, latency_s=lat))


def _host_group(value: Any, path: str, ctx: _Ctx) -> HostGroup:
    r = _Reader(value, path, ctx, "a host group")
    name = r.str("name")
    hosts = r.int("hosts", minimum=1)
    dph = r.int("devices_per_host", minimum=1)
    d = _Reader(r.raw("device"), r.p("device"), ctx, "a device")
    dev = _build(ctx, d.path, lambda: DeviceModel(
        model=d.str("model"),
        hbm_capacity_bytes=int(round(d.quantity("hbm_capacity", BYTES))),
        hbm_bandwidth_bytes_per_s=d.quantity("hbm_bandwidth", BANDWIDTH)))
    d.done()
    h = _Reader(r.raw("host"), r.p("host"), ctx, "a host")
    host = _build(ctx, h.path, lambda: HostSpec(
        ddr_capacity_bytes=int(round(h.quantity("ddr_capacity", BYTES))),
        ddr_bandwidth_bytes_per_s=h.quantity("ddr_bandwidth", BANDWIDTH),
        pcie_bandwidth_bytes_per_s=h.quantity("pcie_bandwidth", BANDWIDTH)))
    h.done()
    intra = _link(r.raw("intra_host_link"), r.p("intra_host_link"), ctx, LinkType, False)
    net = _link(r.raw("network"), r.p("network"), ctx, NetworkType, True)
    r.done()
    return _build(ctx, path, lambda: HostGroup(name=name, hosts=hosts, devices_per_host=dph,
                                                device=dev, host=host, intra_host_link=intra,
                                                network=net))


def topology_from_dict(value: Any, source: str = "<topology>",
                       lines: dict[str, int] | None = None) -> tuple[Topology, Any]:
    """(topology, embedded workload mapping or None) from a parsed mapping. Raises SpecError."""
    ctx = _Ctx(source, lines or {}, TopologyError)
    r = _Reader(value, "", ctx, "a topology")
    name = r.str("name")
    desc = r.str("description", "")
    reserved = r.num("hbm_reserved_fraction", 0.0)
    if reserved >= 1:
        raise ctx.fail("hbm_reserved_fraction", f"must be in [0, 1), got {reserved}")
    wl = r.raw("workload", None)
    groups_raw = _list(r.raw("host_groups"), "host_groups", ctx, "host groups")
    if not groups_raw:
        raise ctx.fail("host_groups", "a topology needs at least one host group")
    groups = tuple(_host_group(g, f"host_groups[{i}]", ctx) for i, g in enumerate(groups_raw))
    r.done()
    wl_path = wl if isinstance(wl, str) else None
    if wl is not None and not isinstance(wl, (str, dict)):
        raise ctx.fail("workload", "expected a workload file path or an embedded workload mapping")
    topo = _build(ctx, "", lambda: Topology(name=name, description=desc, host_groups=groups,
                                            hbm_reserved_fraction=reserved, workload_path=wl_path))
    return topo, (wl if isinstance(wl, dict) else None)


def topology_to_dict(t: Topology) -> dict[str, Any]:
    """The dict form of a topology in base units; ``topology_from_dict`` reads it back equal."""
    def link(lk: Link) -> dict[str, Any]:
        return {"type": lk.type.value, "bandwidth_bytes_per_s": lk.bandwidth_bytes_per_s,
                "latency_s": lk.latency_s}

    return {
        "name": t.name,
        "description": t.description,
        "hbm_reserved_fraction": t.hbm_reserved_fraction,
        "host_groups": [
            {
                "name": g.name, "hosts": g.hosts, "devices_per_host": g.devices_per_host,
                "device": {"model": g.device.model,
                           "hbm_capacity_bytes": g.device.hbm_capacity_bytes,
                           "hbm_bandwidth_bytes_per_s": g.device.hbm_bandwidth_bytes_per_s},
                "host": {"ddr_capacity_bytes": g.host.ddr_capacity_bytes,
                         "ddr_bandwidth_bytes_per_s": g.host.ddr_bandwidth_bytes_per_s,
                         "pcie_bandwidth_bytes_per_s": g.host.pcie_bandwidth_bytes_per_s},
                "intra_host_link": link(g.intra_host_link),
                "network": link(g.network),
            }
            for g in t.host_groups
        ],
    }


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{what} file not found; check the path (bundled topologies: "
                        "`shardplan topologies`)", source=str(path)) from None
    except IsADirectoryError:
        raise SpecError(f"expected a {what} file, got a directory", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read {what} file: {exc}", source=str(path)) from None


def load_workload(path: str | Path, **csv_options: Any) -> Workload:
    """A workload from a ``.yaml``/``.yml``/``.json`` or ``.csv`` file. Raises SpecError."""
    p = Path(path)
    text = _read_text(p, "workload")
    if p.suffix.lower() == ".csv":
        return workload_from_csv(text, str(p), **csv_options)
    value, lines = _compose(text, str(p))
    if value is None:
        raise SpecError("the workload file is empty", source=str(p))
    return workload_from_dict(value, str(p), lines)


def bundled_topologies() -> list[str]:
    """Names of the topologies shipped with shardplan."""
    root = resources.files(BUNDLED_PACKAGE)
    return sorted(f.name[:-5] for f in root.iterdir() if f.name.endswith(".yaml"))


def bundled_workloads() -> list[str]:
    root = resources.files(BUNDLED_PACKAGE).joinpath("workloads")
    return sorted(f.name.rsplit(".", 1)[0] for f in root.iterdir()
                  if f.name.endswith((".yaml", ".csv")))


def resolve_topology_path(name_or_path: str | Path) -> Path:
    """A path as given, or a bundled topology's path by name."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists() or "/" in str(name_or_path):
        return p
    cand = resources.files(BUNDLED_PACKAGE).joinpath(f"{name_or_path}.yaml")
    if cand.is_file():
        return Path(str(cand))
    raise TopologyError(
        f"no topology file or bundled topology named {str(name_or_path)!r}; bundled: "
        + ", ".join(bundled_topologies()), source=str(name_or_path))


def resolve_workload_path(name_or_path: str | Path) -> Path:
    """A path as given, or a bundled workload's path by name."""
    p = Path(name_or_path)
    if p.suffix or p.exists() or "/" in str(name_or_path):
        return p
    root = resources.files(BUNDLED_PACKAGE).joinpath("workloads")
    for ext in (".yaml", ".csv"):
        cand = root.joinpath(f"{name_or_path}{ext}")
        if cand.is_file():
            return Path(str(cand))
    raise SpecError(f"no workload file or bundled workload named {str(name_or_path)!r}; "
                    "bundled: " + ", ".join(bundled_workloads()), source=str(name_or_path))


def load_topology(name_or_path: str | Path) -> Topology:
    """A topology from a file or a bundled name (its workload, if any, is not loaded)."""
    return load_problem(name_or_path, need_workload=False)[0]


def load_problem(topology: str | Path, tables: str | Path | None = None,
                 need_workload: bool = True) -> tuple[Topology, Workload | None]:
    """A topology and its workload: ``tables`` if given, else the one the topology embeds or
    names. Raises SpecError (bad input) naming the file, key path and line."""
    path = resolve_topology_path(topology)
    text = _read_text(path, "topology")
    value, lines = _compose(text, str(path))
    if value is None:
        raise TopologyError("the topology file is empty", source=str(path))
    topo, embedded = topology_from_dict(value, str(path), lines)
    if tables is not None:
        return topo, load_workload(resolve_workload_path(tables))
    if embedded is not None:
        return topo, workload_from_dict(embedded, str(path), lines, path="workload")
    if topo.workload_path is not None:
        wp = Path(topo.workload_path)
        if not wp.is_absolute():
            wp = path.parent / wp
        return topo, load_workload(wp)
    if need_workload:
        raise SpecError("the topology names no workload; pass one with --tables FILE "
                        "(YAML or CSV) or add `workload: FILE` to the topology", source=str(path))
    return topo, None
