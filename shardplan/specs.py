"""The dict (YAML/JSON) form of workloads and topologies, read and written.

Parsing is kept apart from validation: these functions check keys and types, convert units
and strings into enums (with the shared helpers of :mod:`shardplan.parsing`), then call the
validated constructors of :mod:`shardplan.types`. Every error names the source, the key path
and (where YAML gives one) the line. Files, bundled names and CSV are
:mod:`shardplan.loaders` and :mod:`shardplan.csv_workload`.

Quantities accept several units; the unit is part of the key:

* capacities: ``<name>_bytes``, ``<name>_gib`` (2**30), ``<name>_gb`` (1e9), ``<name>_tib``
* bandwidths: ``<name>_bytes_per_s``, ``<name>_gbytes_per_s`` (1e9 B/s), ``<name>_gbits_per_s``
* latencies: ``<name>_s``, ``<name>_us``
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Iterable, TypeVar

from shardplan.errors import LimitError, TopologyError
from shardplan.parsing import (
    DEFAULT_LIMITS,
    Ctx,
    LoadLimits,
    Reader,
    as_enum,
    as_int,
    as_list,
    as_name,
    as_num,
    build,
)
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

BYTES = {"bytes": 1.0, "gib": float(2**30), "gb": 1e9, "tib": float(2**40)}
BANDWIDTH = {"bytes_per_s": 1.0, "gbytes_per_s": 1e9, "gbits_per_s": 1e9 / 8}
LATENCY = {"s": 1.0, "us": 1e-6}


# ---------------------------------------------------------------------------------------------
# Workload
# ---------------------------------------------------------------------------------------------


#: Most rows a table may have: TorchRec's KeyedJaggedTensor and FBGEMM's kernels index rows
#: with int64 ids.
MAX_ROWS = 2**63 - 1


def table_from_dict(value: Any, path: str, ctx: Ctx, default_dtype: DType) -> TableSpec:
    r = Reader(value, path, ctx, "a table")
    name = r.name("name")
    rows = r.int("num_embeddings")
    if rows > MAX_ROWS:
        raise ctx.fail(r.p("num_embeddings"), f"{rows:,} rows is more than 2^63 - 1: TorchRec "
                       "and FBGEMM index rows with int64 ids")
    dim = r.int("embedding_dim")
    pf = r.num("pooling_factor", 1.0)
    feats = r.raw("features", None)
    if feats is not None:
        items = as_list(feats, r.p("features"), ctx, "feature names")
        for i, f in enumerate(items):
            if not isinstance(f, (str, int)) or isinstance(f, bool) or f == "":
                raise ctx.fail(f"{r.p('features')}[{i}]", f"expected a feature name, got {f!r}")
            as_name(str(f), f"{r.p('features')}[{i}]", ctx, "a feature name")
        feats = tuple(str(f) for f in items)
    dtype = r.enum("dtype", DType, default_dtype)
    opt = r.enum("optimizer", Optimizer, None)
    access = None
    if r.has("access"):
        a = Reader(r.raw("access"), r.p("access"), ctx, "an access skew")
        zipf = a.num("zipf_exponent", None)
        hot = a.num("hot_row_fraction", None)
        hot_access = a.num("hot_access_fraction", None)
        order = a.enum("id_order", IdOrder, IdOrder.HASHED)
        curve = a.raw("hit_curve", None)
        if curve is not None:
            cpath = a.p("hit_curve")
            pts = []
            for i, pt in enumerate(as_list(curve, cpath, ctx, "[cache_ratio, hit_rate] pairs")):
                pair = as_list(pt, f"{cpath}[{i}]", ctx, "a [cache_ratio, hit_rate] pair")
                if len(pair) != 2:
                    raise ctx.fail(f"{cpath}[{i}]", f"needs two numbers [cache_ratio, hit_rate], "
                                   f"got {len(pair)}")
                pts.append((as_num(pair[0], f"{cpath}[{i}][0]", ctx),
                            as_num(pair[1], f"{cpath}[{i}][1]", ctx)))
            curve = tuple(pts)
        a.done()
        access = build(ctx, a.path, lambda: AccessSkew(
            zipf_exponent=zipf, hot_row_fraction=hot, hot_access_fraction=hot_access,
            id_order=order, hit_curve=curve))
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
    return build(ctx, path, lambda: TableSpec(
        name=name, num_embeddings=rows, embedding_dim=dim, pooling_factor=float(pf),
        features=feats or (), dtype=dtype, optimizer=opt, access=access, constraints=cons))


def _constraints(value: Any, path: str, ctx: Ctx) -> TableConstraints:
    r = Reader(value, path, ctx, "table constraints")

    def enums(key: str, cls: type[E]) -> tuple[E, ...] | None:
        v = r.raw(key, None)
        if v is None:
            return None
        items = as_list(v, r.p(key), ctx, cls.__name__)
        if not items:
            raise ctx.fail(r.p(key), f"lists no {key.replace('_', ' ')}; list at least one "
                                     "or leave the key out")
        return tuple(as_enum(x, cls, f"{r.p(key)}[{i}]", ctx) for i, x in enumerate(items))

    st = enums("sharding_types", ShardingType)
    pl = enums("placements", PlacementKind)
    pinned = r.raw("pinned_ranks", None)
    if pinned is not None:
        items = as_list(pinned, r.p("pinned_ranks"), ctx, "ranks")
        if not items:
            raise ctx.fail(r.p("pinned_ranks"), "lists no ranks; list at least one or leave "
                                                "the key out")
        pinned = tuple(as_int(x, f"{r.p('pinned_ranks')}[{i}]", ctx, 0)
                       for i, x in enumerate(items))
    mcw = r.int("min_column_shard_width", None, minimum=1)
    r.done()
    return build(ctx, path, lambda: TableConstraints(
        sharding_types=st, placements=pl, pinned_ranks=pinned, min_column_shard_width=mcw))


def workload_from_dict(value: Any, source: str = "<workload>", lines: dict[str, int] | None = None,
                       path: str = "", *, limits: LoadLimits = DEFAULT_LIMITS) -> Workload:
    """A workload from its parsed YAML/JSON mapping.

    Args:
        value: the mapping.
        source: where it came from (a file name), for messages.
        lines: key path -> line, from :func:`shardplan.parsing.compose_yaml`.
        path: the key path of ``value`` inside its source (``workload`` when embedded).
        limits: resource limits (``max_tables``).

    Raises:
        SpecError: naming the source, key path and line.
    """
    ctx = Ctx(source, lines or {})
    r = Reader(value, path, ctx, "a workload")
    name = r.name("name", Path(source).stem if source and not source.startswith("<") else "workload")
    r.text("description", "")
    src = r.text("source", "")
    batch = r.int("batch_size")
    if batch <= 0:
        raise ctx.fail(r.p("batch_size"), f"must be a positive integer, got {batch}")
    scope = r.enum("batch_scope", BatchScope, BatchScope.PER_RANK)
    mode = r.enum("mode", Mode, Mode.TRAINING)
    dopt = r.enum("default_optimizer", Optimizer, Optimizer.ROWWISE_ADAGRAD)
    ddtype = r.enum("default_dtype", DType, DType.FP32)
    tables_raw = r.list("tables", "tables")
    if not tables_raw:
        raise ctx.fail(r.p("tables"), "the workload has no tables; list at least one")
    check_table_count(len(tables_raw), r.p("tables"), ctx, limits)
    tables = tuple(table_from_dict(t, f"{r.p('tables')}[{i}]", ctx, ddtype) for i, t in enumerate(tables_raw))
    check_unique_names(tables, r.p("tables"), ctx)
    names = {t.name for t in tables}
    groups = {}
    for key in ("colocate", "separate"):
        raw = r.list(key, "groups of table names", [])
        out = []
        for i, g in enumerate(raw):
            gp = f"{r.p(key)}[{i}]"
            members = as_list(g, gp, ctx, "table names")
            if len(members) < 2:
                raise ctx.fail(gp, f"a {key} group needs at least two tables, got {len(members)}")
            for j, m in enumerate(members):
                if not isinstance(m, str) or m not in names:
                    raise ctx.fail(f"{gp}[{j}]", f"{m!r} names no table of this workload")
            if len(set(members)) != len(members):
                raise ctx.fail(gp, f"a {key} group names a table twice: {members}")
            out.append(tuple(members))
        groups[key] = tuple(out)
    r.done()
    return build(ctx, path, lambda: Workload(
        name=name, tables=tables, batch_size=batch, batch_scope=scope, mode=mode,
        default_optimizer=dopt, colocate=groups["colocate"], separate=groups["separate"],
        source=src))


def check_unique_names(tables: Iterable[TableSpec], path: str, ctx: Ctx) -> None:
    seen: dict[str, int] = {}
    for i, t in enumerate(tables):
        if t.name in seen:
            raise ctx.fail(f"{path}[{i}].name",
                           f"duplicate table name {t.name!r} (also {path}[{seen[t.name]}]); "
                           "table names must be unique")
        seen[t.name] = i


def check_table_count(n: int, path: str, ctx: Ctx, limits: LoadLimits) -> None:
    if n > limits.max_tables:
        raise LimitError(f"more than max_tables={limits.max_tables:,} tables "
                         "(shardplan.parsing.LoadLimits)", source=ctx.source,
                         key_path=path or None, line=ctx.line_of(path))


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


def _link(value: Any, path: str, ctx: Ctx, cls: type[E], network: bool) -> Link:
    r = Reader(value, path, ctx, "a network" if network else "an intra-host link")
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
    return build(ctx, path, lambda: Link(type=typ, bandwidth_bytes_per_s=bw, latency_s=lat))


def _host_group(value: Any, path: str, ctx: Ctx, limits: LoadLimits) -> HostGroup:
    r = Reader(value, path, ctx, "a host group")
    name = r.name("name")
    hosts = r.int("hosts", minimum=1)
    dph = r.int("devices_per_host", minimum=1)
    for key, v, limit, what in (("hosts", hosts, limits.max_hosts, "max_hosts"),
                                ("devices_per_host", dph, limits.max_devices, "max_devices"),
                                ("hosts", hosts * dph, limits.max_devices, "max_devices")):
        if v > limit:
            raise LimitError(f"{v:,} {'devices' if what == 'max_devices' else 'hosts'} is more "
                             f"than {what}={limit:,} (shardplan.parsing.LoadLimits)",
                             source=ctx.source, key_path=r.p(key), line=ctx.line_of(r.p(key)))
    d = Reader(r.raw("device"), r.p("device"), ctx, "a device")
    model = d.name("model")
    hbm = d.quantity("hbm_capacity", BYTES)
    hbm_bw = d.quantity("hbm_bandwidth", BANDWIDTH)
    d.done()
    dev = build(ctx, d.path, lambda: DeviceModel(model=model, hbm_capacity_bytes=int(round(hbm)),
                                                 hbm_bandwidth_bytes_per_s=hbm_bw))
    h = Reader(r.raw("host"), r.p("host"), ctx, "a host")
    ddr = h.quantity("ddr_capacity", BYTES)
    ddr_bw = h.quantity("ddr_bandwidth", BANDWIDTH)
    pcie_bw = h.quantity("pcie_bandwidth", BANDWIDTH)
    h.done()
    host = build(ctx, h.path, lambda: HostSpec(ddr_capacity_bytes=int(round(ddr)),
                                               ddr_bandwidth_bytes_per_s=ddr_bw,
                                               pcie_bandwidth_bytes_per_s=pcie_bw))
    intra = _link(r.raw("intra_host_link"), r.p("intra_host_link"), ctx, LinkType, False)
    net = _link(r.raw("network"), r.p("network"), ctx, NetworkType, True)
    r.done()
    return build(ctx, path, lambda: HostGroup(name=name, hosts=hosts, devices_per_host=dph,
                                              device=dev, host=host, intra_host_link=intra,
                                              network=net))


def topology_from_dict(value: Any, source: str = "<topology>",
                       lines: dict[str, int] | None = None, *,
                       limits: LoadLimits = DEFAULT_LIMITS) -> tuple[Topology, Any]:
    """(topology, embedded workload mapping or None) from a parsed mapping.

    Args:
        value: the mapping.
        source: where it came from, for messages.
        lines: key path -> line, from :func:`shardplan.parsing.compose_yaml`.
        limits: resource limits (``max_hosts``, ``max_devices``), checked before any
            per-rank structure is built.

    Raises:
        TopologyError: naming the source, key path and line.
        LimitError: more hosts or devices than ``limits`` allow.
    """
    ctx = Ctx(source, lines or {}, TopologyError)
    r = Reader(value, "", ctx, "a topology")
    name = r.name("name")
    desc = r.text("description", "")
    reserved = r.num("hbm_reserved_fraction", 0.0)
    if reserved >= 1:
        raise ctx.fail("hbm_reserved_fraction", f"must be in [0, 1), got {reserved}")
    wl = r.raw("workload", None)
    groups_raw = r.list("host_groups", "host groups")
    if not groups_raw:
        raise ctx.fail("host_groups", "a topology needs at least one host group")
    groups = tuple(_host_group(g, f"host_groups[{i}]", ctx, limits)
                   for i, g in enumerate(groups_raw))
    r.done()
    names = [g.name for g in groups]
    for i, n in enumerate(names):
        if names.index(n) != i:
            raise ctx.fail(f"host_groups[{i}].name", f"duplicate host group name {n!r} (also "
                           f"host_groups[{names.index(n)}]); group names must be unique")
    for total, limit, what in ((sum(g.hosts for g in groups), limits.max_hosts, "max_hosts"),
                               (sum(g.num_devices for g in groups), limits.max_devices,
                                "max_devices")):
        if total > limit:
            raise LimitError(f"{total:,} {what[4:]} in all host groups is more than "
                             f"{what}={limit:,} (shardplan.parsing.LoadLimits)", source=source,
                             key_path="host_groups", line=ctx.line_of("host_groups"))
    wl_path = wl if isinstance(wl, str) else None
    if wl is not None and not isinstance(wl, (str, dict)):
        raise ctx.fail("workload", "expected a workload file path, a bundled workload name or "
                                   "an embedded workload mapping")
    topo = build(ctx, "", lambda: Topology(name=name, description=desc, host_groups=groups,
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
