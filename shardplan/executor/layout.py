"""From a Plan to what each rank runs: its local shards ("slots"), in a fixed order, and how
every pooled output travels back to the rank that owns the samples.

Pure Python, no torch: every rank builds the same ``Layout`` from the same plan, so the
split sizes of every collective are known on both ends without extra messages.

Terms:
    slot: one non-data-parallel shard as a local lookup table of its rank. A slot sees the ids
        of its table for the whole global batch (all sources, in rank order), filtered to its
        rows for row-wise kinds, with row ids made local (``id - row_offset``).
    output kind: how a slot's pooled output reaches the sample owners:
        ``columns`` (TW, CW, TWCW): all-to-all of a [B_global, num_cols] block, sliced by owner.
        ``rows`` (RW): partial sums [B_global, dim] reduced and scattered over all ranks.
        ``host_rows`` (TWRW): reduce-scatter inside the host, then all-to-all across hosts
        among the ranks of equal local rank.
        ``span_rows`` (RW over a subset of ranks, ``types.row_span``): reduce-scatter among
        the subset (member ``j`` keeps the samples of ranks ``r`` with ``r mod n == j``), then
        an all-to-all of each member's chunk to the sample owners.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Mapping

from shardplan.errors import PlanError
from shardplan.plans import check_estimates, check_plan
from shardplan.types import DType, GroupKey, Mode, Optimizer, Plan, ShardingType, row_span

__all__ = ["GROUP_ORDER", "OutputKind", "Slot", "DPTable", "Layout", "build_layout",
           "SUPPORTED_OPTIMIZERS", "INFERENCE_DTYPES"]

SUPPORTED_OPTIMIZERS = (Optimizer.SGD, Optimizer.ROWWISE_ADAGRAD)
#: The weight dtypes inference plans run in (FBGEMM's ``IntNBitTableBatchedEmbeddingBagsCodegen``
#: weight types; bf16 is not one of them).
INFERENCE_DTYPES = (DType.FP32, DType.FP16, DType.INT8, DType.INT4)
#: The order sharding groups run their collectives in, on every rank.
GROUP_ORDER = (ShardingType.TABLE_WISE, ShardingType.COLUMN_WISE, ShardingType.TABLE_COLUMN_WISE,
               ShardingType.ROW_WISE, ShardingType.TABLE_ROW_WISE, ShardingType.GRID_SHARD)
#: The sharding types whose row blocks are reduce-scattered inside a host, then sent along rails.
HOST_ROW_TYPES = (ShardingType.TABLE_ROW_WISE, ShardingType.GRID_SHARD)


class OutputKind(StrEnum):
    COLUMNS = "columns"
    ROWS = "rows"
    HOST_ROWS = "host_rows"
    SPAN_ROWS = "span_rows"  # row-wise over a subset of ranks


_KIND = {
    ShardingType.TABLE_WISE: OutputKind.COLUMNS,
    ShardingType.COLUMN_WISE: OutputKind.COLUMNS,
    ShardingType.TABLE_COLUMN_WISE: OutputKind.COLUMNS,
    ShardingType.ROW_WISE: OutputKind.ROWS,
    ShardingType.TABLE_ROW_WISE: OutputKind.HOST_ROWS,
    ShardingType.GRID_SHARD: OutputKind.HOST_ROWS,
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Slot:
    """One local shard of a rank (a table of its batched lookup kernel)."""

    table: str
    table_index: int  # index in the workload
    shard_index: int  # index in the plan's shard list of the table
    rank: int
    kind: OutputKind
    group: GroupKey  # its sharding group
    row_offset: int
    num_rows: int
    col_offset: int
    num_cols: int
    host: int  # the rank's host (TWRW: the host that holds the table)


@dataclass(frozen=True, kw_only=True, slots=True)
class DPTable:
    table: str
    table_index: int
    num_rows: int
    dim: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Layout:
    """Everything a rank needs to know about every rank's shards.

    Attributes:
        world_size: ranks.
        batch_per_rank: samples each rank owns per step.
        slots: per rank, its slots in kernel order (table index, then shard index).
        dp_tables: data-parallel tables (a full replica on every rank), workload order.
        dims: embedding dim per table, workload order.
        table_names: workload order.
        optimizer: the one optimizer of every table (SGD or row-wise Adagrad; ``none`` for
            inference).
        rows_tables: row-wise tables, workload order; their partial sums share one tensor.
        host_entries: per host-rows type (TWRW, GRID), per host, the (table, first column,
            columns) blocks it reduces inside the host, workload order (TWRW: whole tables;
            GRID: one column block of a table per host).
        host_ranks: per host, its ranks in local-rank order.
        col_blocks: per table, the column blocks that keep their own row-wise optimizer state.
        groups: the sharding groups of the plan's non-data-parallel tables (one input dist,
            one output dist and one lookup kernel each, as TorchRec runs them), in a fixed order.
        span_tables: per row-wise subset (a group's ``ranks``), its tables, workload order.
        mode: training steps (forward, backward, update) or inference steps (forward only).
        dtypes: weight dtype per table, workload order (inference runs them; training runs
            fp32 weights whatever the plan says).
    """

    world_size: int
    batch_per_rank: int
    slots: tuple[tuple[Slot, ...], ...]
    dp_tables: tuple[DPTable, ...]
    dims: tuple[int, ...]
    table_names: tuple[str, ...]
    optimizer: Optimizer
    rows_tables: tuple[int, ...]
    host_entries: Mapping[ShardingType, tuple[tuple[tuple[int, int, int], ...], ...]]
    host_ranks: tuple[tuple[int, ...], ...]
    col_blocks: tuple[tuple[tuple[int, int], ...], ...]
    groups: tuple[GroupKey, ...] = ()
    span_tables: Mapping[tuple[int, ...], tuple[int, ...]] = field(default_factory=dict)
    mode: Mode = Mode.TRAINING
    dtypes: tuple[DType, ...] = ()

    @property
    def inference(self) -> bool:
        return self.mode is Mode.INFERENCE

    @property
    def batch_global(self) -> int:
        return self.batch_per_rank * self.world_size

    @property
    def num_hosts(self) -> int:
        return len(self.host_ranks)

    def group_slots(self, key: GroupKey, rank: int) -> tuple[Slot, ...]:
        """Rank ``rank``'s slots of sharding group ``key``, in kernel order."""
        return tuple(s for s in self.slots[rank] if s.group == key)

    def columns_width(self, rank: int, key: GroupKey | None = None) -> int:
        """Total columns of rank ``rank``'s ``columns`` slots (of group ``key``, or all): its
        output all-to-all block."""
        return sum(s.num_cols for s in self.slots[rank] if s.kind is OutputKind.COLUMNS
                   and (key is None or s.group == key))

    def span_width(self, span: tuple[int, ...]) -> int:
        return sum(self.dims[t] for t in self.span_tables[span])

    def span_offset(self, span: tuple[int, ...], table_index: int) -> int:
        off = 0
        for t in self.span_tables[span]:
            if t == table_index:
                return off
            off += self.dims[t]
        raise KeyError(table_index)

    def rows_width(self) -> int:
        return sum(self.dims[t] for t in self.rows_tables)

    def rows_offset(self, table_index: int) -> int:
        off = 0
        for t in self.rows_tables:
            if t == table_index:
                return off
            off += self.dims[t]
        raise KeyError(table_index)

    def host_rows(self, st: ShardingType, host: int) -> tuple[tuple[int, int, int], ...]:
        """(table, first column, columns) blocks of type ``st`` reduced inside ``host``."""
        per_host = self.host_entries.get(st)
        return per_host[host] if per_host else ()

    def host_rows_width(self, st: ShardingType, host: int) -> int:
        return sum(nc for _, _, nc in self.host_rows(st, host))

    def host_rows_offset(self, st: ShardingType, host: int, table_index: int, col: int) -> int:
        off = 0
        for t, c0, nc in self.host_rows(st, host):
            if t == table_index and c0 == col:
                return off
            off += nc
        raise KeyError((table_index, col))

    @property
    def has_host_rows(self) -> bool:
        return any(any(h) for h in self.host_entries.values())


def build_layout(plan: Plan, world_size: int | None = None) -> Layout:
    """Check ``plan`` and derive every rank's shards. Nothing runs before this succeeds.

    Args:
        plan: a plan (usually from :func:`shardplan.plans.load_plan`).
        world_size: the processes that will run it; must equal the plan's topology's ranks
            times its 2D ``replicas``.

    Returns:
        The layout every rank builds identically.

    Raises:
        PlanError: the plan is inconsistent (shards moved, dropped or overlapping; a rank
            outside the topology), a shard shape the sharding type cannot have, an optimizer
            the executor does not implement, a world size other than the plan's; for an
            inference plan: a dtype FBGEMM's inference kernels do not run (bf16), an int4
            table or column shard of odd width, or 2D replicas.
    """
    check_plan(plan, check_memory=False)
    topo, work = plan.topology, plan.workload
    world = topo.world_size
    procs = world * plan.replicas
    if world_size is not None and world_size != procs:
        made = f"{world} ranks ({topo.name})" + (
            f" x {plan.replicas} replicas = {procs} processes" if plan.replicas > 1 else "")
        raise PlanError(
            f"the plan was made for {made} but {world_size} were asked for; the executor never "
            f"remaps shards: re-solve for a {world_size}-rank topology (e.g. `shardplan solve "
            f"cpu-{world_size} --out plan.json`)", key_path="topology")
    if work.mode is Mode.INFERENCE:
        _check_inference(plan)
    opts = {work.optimizer_of(t) for t in work.tables}
    if work.mode is Mode.TRAINING and (len(opts) != 1
                                       or next(iter(opts)) not in SUPPORTED_OPTIMIZERS):
        raise PlanError(f"the executor runs one optimizer for all tables, one of "
                        f"{', '.join(o.value for o in SUPPORTED_OPTIMIZERS)}; this workload uses "
                        f"{', '.join(sorted(o.value for o in opts))}",
                        key_path="workload.default_optimizer")
    batch = work.batch_per_rank(world)
    if batch != int(batch) or batch < 1:
        raise PlanError(f"the global batch {work.batch_size} does not split evenly over {world} "
                        "ranks", key_path="workload.batch_size")
    index = {t.name: i for i, t in enumerate(work.tables)}
    by_table = {t.name: t for t in plan.tables}
    host_of = [ri.host for ri in topo.ranks]
    host_ranks = tuple(topo.ranks_of_host(h) for h in range(topo.num_hosts))
    per_rank: list[list[Slot]] = [[] for _ in range(world)]
    dp: list[DPTable] = []
    rows_tables: list[int] = []
    host_rows: dict[ShardingType, list[list[tuple[int, int, int]]]] = {
        st: [[] for _ in host_ranks] for st in HOST_ROW_TYPES}
    col_blocks: list[tuple[tuple[int, int], ...]] = []
    spans: dict[tuple[int, ...], list[int]] = {}
    for spec in work.tables:
        ti = index[spec.name]
        tp = by_table[spec.name]
        where = f"tables[{spec.name}]"
        st = tp.sharding_type
        blocks = sorted({(s.col_offset, s.num_cols) for s in tp.shards})
        col_blocks.append(tuple(blocks) if st in (ShardingType.COLUMN_WISE,
                                                   ShardingType.TABLE_COLUMN_WISE,
                                                   ShardingType.GRID_SHARD)
                          else ((0, spec.embedding_dim),))
        if st is ShardingType.DATA_PARALLEL:
            dp.append(DPTable(table=spec.name, table_index=ti, num_rows=spec.num_embeddings,
                              dim=spec.embedding_dim))
            continue
        kind = _KIND[st]
        for i, s in enumerate(tp.shards):
            if kind is OutputKind.COLUMNS and s.num_rows != spec.num_embeddings:
                raise PlanError(f"shard {i} of {st.short} table {spec.name!r} on rank {s.rank} "
                                f"holds rows {s.row_offset}+{s.num_rows}; {st.short} shards hold "
                                "every row", key_path=f"{where}.shards[{i}]")
            if (kind is not OutputKind.COLUMNS and st is not ShardingType.GRID_SHARD
                    and s.num_cols != spec.embedding_dim):
                raise PlanError(f"shard {i} of {st.short} table {spec.name!r} on rank {s.rank} "
                                f"holds columns {s.col_offset}+{s.num_cols}; {st.short} shards "
                                "hold every column", key_path=f"{where}.shards[{i}]")
        if st is ShardingType.TABLE_WISE and len(tp.shards) != 1:
            raise PlanError(f"table-wise table {spec.name!r} has {len(tp.shards)} shards, not 1",
                            key_path=where)
        key = GroupKey(sharding_type=st)
        if kind is OutputKind.ROWS:
            span = row_span([s.rank for s in tp.shards], spec.num_embeddings, world)
            if span is None:
                rows_tables.append(ti)
            else:
                kind = OutputKind.SPAN_ROWS
                key = GroupKey(sharding_type=st, ranks=span)
                spans.setdefault(span, []).append(ti)
        if kind is OutputKind.HOST_ROWS:
            if len({len(h) for h in host_ranks}) != 1:
                raise PlanError(f"{st.short} sharding needs the same number of ranks on every "
                                "host", key_path=where)
            col_hosts: dict[tuple[int, int], set[int]] = {}
            for s in tp.shards:
                col_hosts.setdefault((s.col_offset, s.num_cols), set()).add(host_of[s.rank])
            for (c0, nc), hosts in sorted(col_hosts.items()):
                if len(hosts) != 1:
                    raise PlanError(f"{st.short} table {spec.name!r} has the row blocks of "
                                    f"columns {c0}+{nc} on hosts {sorted(hosts)}; they must stay "
                                    "on one host", key_path=where)
                host_rows[st][next(iter(hosts))].append((ti, c0, nc))
        for i, s in enumerate(tp.shards):
            per_rank[s.rank].append(Slot(
                table=spec.name, table_index=ti, shard_index=i, rank=s.rank, kind=kind,
                group=key,
                row_offset=s.row_offset, num_rows=s.num_rows, col_offset=s.col_offset,
                num_cols=s.num_cols, host=host_of[s.rank]))
    slots = tuple(tuple(sorted(p, key=lambda s: (s.table_index, s.shard_index)))
                  for p in per_rank)
    return Layout(
        world_size=world, batch_per_rank=int(batch), slots=slots, dp_tables=tuple(dp),
        dims=tuple(t.embedding_dim for t in work.tables),
        table_names=tuple(t.name for t in work.tables), optimizer=next(iter(opts)),
        rows_tables=tuple(rows_tables),
        host_entries={st: tuple(tuple(h) for h in per) for st, per in host_rows.items()
                      if any(per)},
        host_ranks=host_ranks, col_blocks=tuple(col_blocks),
        groups=_groups(per_rank), span_tables={k: tuple(v) for k, v in sorted(spans.items())},
        mode=work.mode, dtypes=tuple(t.dtype for t in work.tables))


def _check_inference(plan: Plan) -> None:
    """What an inference plan must satisfy for the executor (``docs/executor.md``)."""
    if plan.replicas > 1:
        raise PlanError(f"inference plans run without 2D replicas; this plan has "
                        f"{plan.replicas} (re-solve it with replicas 1)", key_path="replicas")
    for tp in plan.tables:
        spec = plan.workload.table(tp.name)
        where = f"tables[{spec.name}]"
        if spec.dtype not in INFERENCE_DTYPES:
            raise PlanError(f"inference table {spec.name!r} has dtype {spec.dtype.value}; "
                            f"FBGEMM's inference kernels run "
                            f"{', '.join(d.value for d in INFERENCE_DTYPES)}: set its dtype to "
                            "one of those", key_path=f"{where}.dtype")
        if spec.dtype is not DType.INT4:
            continue
        if spec.embedding_dim % 2:
            raise PlanError(f"int4 table {spec.name!r} has an odd embedding_dim "
                            f"{spec.embedding_dim}; int4 packs two values per byte: use an even "
                            "dimension (e.g. pad it to the next even number) or int8",
                            key_path=f"{where}.embedding_dim")
        for i, s in enumerate(tp.shards):
            if s.col_offset % 2 or s.num_cols % 2:
                raise PlanError(f"int4 table {spec.name!r}: shard {i} holds columns "
                                f"{s.col_offset}+{s.num_cols}; int4 column shards must start "
                                "and end on an even column (two values per byte): re-solve "
                                "with even column blocks", key_path=f"{where}.shards[{i}]")


def _groups(per_rank: list[list[Slot]]) -> tuple[GroupKey, ...]:
    """The plan's sharding groups in GROUP_ORDER (subsets of a type after its world group)."""
    keys = {s.group for slots in per_rank for s in slots}
    return tuple(sorted(keys, key=lambda k: (GROUP_ORDER.index(k.sharding_type),
                                             k.ranks is not None, k.ranks or ())))


def check_estimates_match(plan: Plan) -> bool:
    """Catch shards moved between ranks after solving: re-derive each rank's estimates under
    the cost model that made the plan (:func:`shardplan.plans.check_estimates`, which uses
    :func:`shardplan.estimators.recorded.cost_model_of`) and compare them with the plan's.

    Returns:
        True if the check ran (and passed); False, with a ``ShardplanWarning`` saying so, when
        the plan's cost model cannot be rebuilt (capacities were still checked).

    Raises:
        PlanError: a rank's recorded memory or time differs from what its shards need.
    """
    return check_estimates(plan)
