"""Loading topologies and workloads: files, bundled names, and the checks that need both.

A topology is a YAML file or a bundled name (``shardplan topologies``); a workload a YAML or
CSV file or a bundled name, or the one the topology embeds or names. The dict forms are
:mod:`shardplan.specs`, CSV is :mod:`shardplan.csv_workload`, the shared parsing helpers and
resource limits :mod:`shardplan.parsing`. Every error names the file, the key path and (where
YAML gives one) the line, as ``SpecError``; inputs over the loaders' limits
(:class:`~shardplan.parsing.LoadLimits`) are a ``LimitError``.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any

from shardplan.csv_workload import CSV_BATCH_SIZE, CSV_OPTIONAL, CSV_REQUIRED, workload_from_csv
from shardplan.errors import SpecError, TopologyError
from shardplan.parsing import DEFAULT_LIMITS, Ctx, LoadLimits, compose_yaml, read_text
from shardplan.specs import (
    BANDWIDTH,
    BYTES,
    LATENCY,
    table_from_dict,
    topology_from_dict,
    topology_to_dict,
    workload_from_dict,
    workload_to_dict,
)
from shardplan.types import BatchScope, DType, Mode, Topology, Workload

BUNDLED_PACKAGE = "shardplan.topologies"
DEFAULT_TOPOLOGY = "dgx-h100-2x8"


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def _read_workload(p: Path, limits: LoadLimits, **csv_options: Any) -> tuple[Workload, Ctx]:
    """A workload file and where its values came from (for checks against a topology)."""
    text = read_text(p, "workload", limits)
    if p.suffix.lower() == ".csv":
        return workload_from_csv(text, str(p), limits=limits, **csv_options), Ctx(str(p))
    value, lines = compose_yaml(text, str(p), limits)
    if value is None:
        raise SpecError("the workload file is empty", source=str(p))
    return workload_from_dict(value, str(p), lines, limits=limits), Ctx(str(p), lines)


def load_workload(path: str | Path, *, limits: LoadLimits = DEFAULT_LIMITS,
                  **csv_options: Any) -> Workload:
    """A workload from a ``.yaml``/``.yml``/``.json`` or ``.csv`` file.

    Args:
        path: the file.
        limits: resource limits (file size, nesting, YAML nodes and aliases, tables).
        csv_options: for a CSV: ``batch_size``, ``batch_scope``, ``mode``,
            ``default_optimizer`` (a CSV carries none of them).

    Raises:
        SpecError: naming the file, key path (or CSV row and column) and line.
    """
    return _read_workload(Path(_path_arg(path, "workload", "path")), limits, **csv_options)[0]


def _path_arg(value: Any, what: str, arg: str) -> str | Path:
    """``value`` if it can name a file (a ``str`` or path), else SpecError saying what to pass
    (a ``Topology`` or ``Workload`` object where a name was expected is the usual slip)."""
    if isinstance(value, (str, Path)) and str(value).strip():
        return value
    if isinstance(value, (Topology, Workload)):
        raise SpecError(f"{arg} takes a {what} file path or bundled name, not a "
                        f"{type(value).__name__} object (it is loaded already)", key_path=arg)
    raise SpecError(f"{arg} takes a {what} file path or bundled name (a str or Path), got "
                    f"{type(value).__name__} {str(value)[:40]!r}", key_path=arg)


def bundled_topologies() -> list[str]:
    """Names of the topologies shipped with shardplan."""
    root = resources.files(BUNDLED_PACKAGE)
    return sorted(f.name[:-5] for f in root.iterdir() if f.name.endswith(".yaml"))


def bundled_workloads() -> list[str]:
    """Names of the workloads shipped with shardplan."""
    root = resources.files(BUNDLED_PACKAGE).joinpath("workloads")
    return sorted(f.name.rsplit(".", 1)[0] for f in root.iterdir()
                  if f.name.endswith((".yaml", ".csv")))


def resolve_topology_path(name_or_path: str | Path) -> Path:
    """A path as given, or a bundled topology's path by name."""
    p = Path(_path_arg(name_or_path, "topology", "topology"))
    if p.suffix in (".yaml", ".yml") or p.exists() or "/" in str(name_or_path):
        return p
    cand = resources.files(BUNDLED_PACKAGE).joinpath(f"{name_or_path}.yaml")
    if cand.is_file():
        return Path(str(cand))
    raise TopologyError(
        f"no topology file or bundled topology named {str(name_or_path)!r}; bundled: "
        + ", ".join(bundled_topologies()), source=str(name_or_path))


def _bundled_workload(name: str) -> Path | None:
    root = resources.files(BUNDLED_PACKAGE).joinpath("workloads")
    for ext in (".yaml", ".csv"):
        cand = root.joinpath(f"{name}{ext}")
        if cand.is_file():
            return Path(str(cand))
    return None


def resolve_workload_path(name_or_path: str | Path) -> Path:
    """A path as given, or a bundled workload's path by name."""
    p = Path(_path_arg(name_or_path, "workload", "tables"))
    if p.suffix or p.exists() or "/" in str(name_or_path):
        return p
    cand = _bundled_workload(str(name_or_path))
    if cand is not None:
        return cand
    raise SpecError(f"no workload file or bundled workload named {str(name_or_path)!r}; "
                    "bundled: " + ", ".join(bundled_workloads()), source=str(name_or_path))


def _named_workload(value: str, topology_file: Path, ctx: Ctx) -> Path:
    """The file a topology's ``workload:`` names: a path relative to the topology file (or
    absolute), else a bundled workload by name (``small-cpu``, ``workloads/small-cpu.yaml``)."""
    wp = Path(value)
    if not wp.is_absolute():
        wp = topology_file.parent / wp
    if wp.is_file():
        return wp
    stem = Path(value).name.rsplit(".", 1)[0] if Path(value).suffix else Path(value).name
    cand = _bundled_workload(stem)
    if cand is not None:
        return cand
    raise ctx.fail("workload", f"no workload file {wp} (paths are relative to the topology "
                               f"file) and no bundled workload named {stem!r}; bundled: "
                               + ", ".join(bundled_workloads()))


def load_topology(name_or_path: str | Path, *, limits: LoadLimits = DEFAULT_LIMITS) -> Topology:
    """A topology from a file or a bundled name (its workload, if any, is not loaded)."""
    return load_problem(name_or_path, need_workload=False, limits=limits)[0]


def load_problem(topology: str | Path, tables: str | Path | None = None,
                 need_workload: bool = True, *, limits: LoadLimits = DEFAULT_LIMITS,
                 ) -> tuple[Topology, Workload | None]:
    """A topology and its workload.

    Note the order: ``(topology, workload)``; :func:`shardplan.plan` takes
    ``(workload, topology)`` (``plan(work, topo)``).

    Args:
        topology: a topology YAML file or a bundled name (``shardplan topologies``).
        tables: a workload file (YAML or CSV) or bundled name; default: the workload the
            topology embeds or names (``workload:`` a path relative to the topology file, or a
            bundled workload name).
        need_workload: raise when there is no workload (else return None for it).
        limits: resource limits of the loaders.

    Returns:
        ``(topology, workload)``.

    Raises:
        SpecError: bad input, naming the file, key path and line; also a table pinned to a
            rank the topology does not have.
    """
    path = resolve_topology_path(topology)
    text = read_text(path, "topology", limits, TopologyError)
    value, lines = compose_yaml(text, str(path), limits)
    if value is None:
        raise TopologyError("the topology file is empty", source=str(path))
    topo, embedded = topology_from_dict(value, str(path), lines, limits=limits)
    tctx = Ctx(str(path), lines)
    if tables is not None:
        work, wctx, prefix = *_read_workload(resolve_workload_path(tables), limits), ""
    elif embedded is not None:
        work = workload_from_dict(embedded, str(path), lines, path="workload", limits=limits)
        wctx, prefix = tctx, "workload."
    elif topo.workload_path is not None:
        wp = _named_workload(topo.workload_path, path, tctx)
        work, wctx, prefix = *_read_workload(wp, limits), ""
    elif need_workload:
        raise SpecError("the topology names no workload; pass one with --tables FILE "
                        "(YAML or CSV) or add `workload: FILE` to the topology", source=str(path))
    else:
        return topo, None
    check_pins(work, topo, wctx, prefix)
    return topo, work


def check_pins(workload: Workload, topology: Topology, ctx: Ctx | None = None,
               prefix: str = "") -> None:
    """Raise SpecError (naming the workload file, key path and line when ``ctx`` has them)
    if a table is pinned to a rank ``topology`` does not have."""
    ctx = ctx or Ctx(workload.source or workload.name)
    world = topology.world_size
    for i, t in enumerate(workload.tables):
        bad = sorted(r for r in (t.constraints.pinned_ranks or ()) if r >= world)
        if bad:
            shown = ", ".join(map(str, bad[:5])) + (f", ... ({len(bad)} in all)"
                                                     if len(bad) > 5 else "")
            raise ctx.fail(f"{prefix}tables[{i}].constraints.pinned_ranks",
                           f"table {t.name!r} is pinned to rank(s) {shown}, "
                           f"but topology {topology.name!r} has ranks 0..{world - 1}")


def with_overrides(workload: Workload, *, batch_size: int | None = None,
                   batch_scope: BatchScope | None = None, mode: Mode | None = None,
                   dtype: DType | None = None) -> Workload:
    """``workload`` with its batch size, batch scope, mode or every table's dtype replaced
    (what the CLI's ``--batch-size``, ``--batch-scope``, ``--mode`` and ``--dtype`` do; a CSV
    carries none of them).

    Raises:
        SpecError: a batch size below 1.
    """
    changes: dict[str, Any] = {}
    if batch_size is not None:
        if batch_size < 1:
            raise SpecError(f"the batch size must be >= 1, got {batch_size}",
                            key_path="batch_size")
        changes["batch_size"] = batch_size
    if batch_scope is not None:
        changes["batch_scope"] = batch_scope
    if mode is not None:
        changes["mode"] = mode
    if dtype is not None:
        changes["tables"] = tuple(dataclasses.replace(t, dtype=dtype) for t in workload.tables)
    return dataclasses.replace(workload, **changes) if changes else workload


__all__ = ["BANDWIDTH", "BUNDLED_PACKAGE", "BYTES", "CSV_BATCH_SIZE", "CSV_OPTIONAL",
           "CSV_REQUIRED", "DEFAULT_TOPOLOGY", "LATENCY", "LoadLimits", "bundled_topologies",
           "bundled_workloads", "check_pins", "load_problem", "load_topology", "load_workload",
           "resolve_topology_path", "resolve_workload_path", "table_from_dict",
           "topology_from_dict", "topology_to_dict", "with_overrides", "workload_from_csv",
           "workload_from_dict", "workload_to_dict"]
