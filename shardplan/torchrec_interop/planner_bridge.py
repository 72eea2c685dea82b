"""The planner bridge: :func:`plan_for_torchrec` (the trainer's API: our planner, TorchRec's
plan), and the head-to-head (our ``Topology`` -> TorchRec's, TorchRec's planner run on our
problem, its plan read back as our ``Assignment``)."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from shardplan.errors import InfeasiblePlanError, PlanError
from shardplan.torchrec_interop.common import (
    DEFAULT_CACHE_LOAD_FACTOR,
    KERNEL_DENSE,
    KERNEL_FUSED,
    KERNEL_OF_PLACEMENT,
    PLACEMENT_OF_KERNEL,
    SUPPORTED_SHARDING_TYPES,
    _torchrec,
)
from shardplan.torchrec_interop.export import (
    export_torchrec,
    infer_compute_device,
    local_world_size,
    sharding_plan_from_dict,
)
from shardplan.torchrec_interop.importing import (
    _configs_of,
    workload_from_torchrec,
    workload_to_configs,
)
from shardplan.types import (
    Assignment,
    Optimizer,
    Placement,
    PlacementKind,
    Plan,
    ShardingOption,
    ShardingType,
    ShardSpec,
    Topology,
    Workload,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn
    from torchrec.distributed.planner.types import ParameterConstraints, Topology as TorchRecTopology
    from torchrec.distributed.types import ShardingPlan


def plan_for_torchrec(
    module_or_configs: nn.Module | Sequence[Any],
    topology: Topology | str,
    *,
    batch_size: int,
    constraints: Mapping[str, ParameterConstraints] | None = None,
    optimizer: Optimizer = Optimizer.ROWWISE_ADAGRAD,
    compute_device: str | None = None,
    **plan_kwargs: Any,
) -> ShardingPlan:
    """Plan a TorchRec model with shardplan; the result goes straight into
    ``DistributedModelParallel(model, plan=...)``.

    Args:
        module_or_configs: the model (any device, ``meta`` included), an
            ``EmbeddingBagCollection``, or a list of ``EmbeddingBagConfig`` (then the plan's
            module path is ``""``: give DMP the EBC itself).
        topology: a Topology, a bundled topology name or a YAML path.
        batch_size: samples per rank per step.
        constraints: TorchRec ``ParameterConstraints`` by table name (pooling factors,
            sharding types, kernels, min_partition).
        optimizer: the embedding optimizer, for the memory of its state.
        compute_device: ``cpu`` or ``cuda``; by default inferred from the topology.
        **plan_kwargs: passed to :func:`shardplan.plan` (``solver``, ``time_limit_s``,
            ``cost_model``, ...).

    Returns:
        TorchRec's ``ShardingPlan``, one entry per EBC (keyed by its FQN).

    Raises:
        InfeasiblePlanError: no plan fits the topology.
        SpecError: bad tables, constraints or topology.
        TorchRecMissingError: TorchRec is not installed.

    Example:
        >>> from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
        >>> from shardplan.torchrec_interop import plan_for_torchrec
        >>> ebc = EmbeddingBagCollection(device="meta", tables=[
        ...     EmbeddingBagConfig(name=f"t{i}", num_embeddings=10_000, embedding_dim=64,
        ...                        feature_names=[f"f{i}"]) for i in range(4)])
        >>> plan = plan_for_torchrec(ebc, "cpu-2", batch_size=64)
        >>> sorted(plan.plan[""])
        ['t0', 't1', 't2', 't3']
    """
    from shardplan.loaders import load_topology
    from shardplan.planner import plan as shardplan_plan

    topo = load_topology(topology) if isinstance(topology, str) else topology
    pairs = _configs_of(module_or_configs)
    workload = workload_from_torchrec(module_or_configs, batch_size=batch_size,
                                      constraints=constraints, optimizer=optimizer)
    ours = shardplan_plan(workload, topo, **plan_kwargs)
    full = export_torchrec(ours, compute_device=compute_device)
    by_table = full["plan"][""]
    per_module: dict[str, dict[str, Any]] = {}
    for path, c in pairs:
        per_module.setdefault(path, {})[c.name] = by_table[c.name]
    full["plan"] = per_module
    return sharding_plan_from_dict(full)


# ---------------------------------------------------------------------------------------------
# Head-to-head: our Topology -> TorchRec's, TorchRec's planner -> our Plan
# ---------------------------------------------------------------------------------------------

# TorchRec's planner takes bandwidths in bytes per millisecond
# (torchrec/distributed/planner/constants.py: "HBM_MEM_BW ... # bytes/ms").
_MS_PER_S = 1000.0


def topology_to_torchrec(topology: Topology, *, compute_device: str | None = None
                         ) -> TorchRecTopology:
    """TorchRec's planner ``Topology`` for ours.

    Per-rank HBM and DDR caps are our usable capacities (HBM less ``hbm_reserved_fraction``;
    the host's DDR split among its devices), given as ``CustomTopologyData`` so heterogeneous
    clusters keep their per-rank sizes. TorchRec has one bandwidth per kind for the whole
    cluster, so a heterogeneous topology gets the slowest group's (a modelling gap of
    TorchRec's, noted in docs/torchrec.md). Inter-host bandwidth is per device: the host's
    NIC total divided by its devices.

    Raises:
        PlanError: host groups with different devices per host.
        TorchRecMissingError: TorchRec is not installed.
    """
    _torchrec()
    from torchrec.distributed.planner.types import CustomTopologyData
    from torchrec.distributed.planner.types import Topology as TRTopology

    device = compute_device or infer_compute_device(topology)
    local = local_world_size(topology)
    world = topology.world_size
    caps = [topology.capacity(r) for r in range(world)]
    groups = topology.host_groups
    data = {"hbm_cap": [int(c.hbm) for c in caps], "ddr_cap": [int(c.ddr) for c in caps]}
    if device == "cpu":  # TorchRec plans CPU tables in DDR: our "HBM" share is the process's RAM
        data = {"hbm_cap": [0] * world, "ddr_cap": [int(c.hbm + c.ddr) for c in caps]}
    with _quiet_torchrec():
        return TRTopology(
            world_size=world,
            local_world_size=local,
            compute_device=device,
            hbm_mem_bw=min(g.device.hbm_bandwidth_bytes_per_s for g in groups) / _MS_PER_S,
            ddr_mem_bw=min(g.host.ddr_bandwidth_bytes_per_s for g in groups) / _MS_PER_S,
            hbm_to_ddr_mem_bw=min(g.host.pcie_bandwidth_bytes_per_s for g in groups) / _MS_PER_S,
            intra_host_bw=min(g.intra_host_link.bandwidth_bytes_per_s for g in groups) / _MS_PER_S,
            inter_host_bw=min(g.network.bandwidth_bytes_per_s / g.devices_per_host
                              for g in groups) / _MS_PER_S,
            custom_topology_data=CustomTopologyData(data=data, world_size=world),
        )


@contextmanager
def _quiet_torchrec() -> Iterator[None]:
    """Silence TorchRec's planner logging (stats tables, the TopologyFactory warning, and the
    root-logger "Sharding spec not found" it logs for every data-parallel table)."""
    loggers = [logging.getLogger(n) for n in ("torchrec", "torchrec.distributed.planner",
                                                "torchrec.distributed.planner.types")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    root_filter = _DropMessages(("Sharding spec not found",))
    logging.getLogger().addFilter(root_filter)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(root_filter)
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def _torchrec_optimizer(opt: Optimizer) -> Any:
    import torch
    import torchrec.optim as trec_optim

    return {Optimizer.SGD: torch.optim.SGD, Optimizer.ADAGRAD: trec_optim.Adagrad,
            Optimizer.ROWWISE_ADAGRAD: trec_optim.RowWiseAdagrad,
            Optimizer.ADAM: trec_optim.Adam}.get(opt)


def torchrec_constraints(workload: Workload, topology: Topology) -> dict[str, Any]:
    """TorchRec ``ParameterConstraints`` per table saying what our planner is told: pooling
    factors, the sharding types and kernels our enumerator offers, user constraints."""
    _torchrec()
    from torchrec.distributed.planner.types import ParameterConstraints

    device = infer_compute_device(topology)
    out = {}
    for t in workload.tables:
        c = t.constraints
        types = [s.value for s in SUPPORTED_SHARDING_TYPES if c.allows(s)]
        if device == "cpu":
            kernels = [KERNEL_FUSED, KERNEL_DENSE]
        else:
            kernels = [KERNEL_OF_PLACEMENT[k] for k in KERNEL_OF_PLACEMENT
                       if c.allows_placement(k)] + [KERNEL_DENSE]
        per_feature = t.pooling_factor / t.num_features
        out[t.name] = ParameterConstraints(
            sharding_types=types, compute_kernels=kernels,
            min_partition=c.min_column_shard_width,
            pooling_factors=[per_feature] * t.num_features)
    return out


def torchrec_module(workload: Workload) -> Any:
    """A meta-device ``EmbeddingBagCollection`` of ``workload``, each weight tagged with its
    optimizer the way ``apply_optimizer_in_backward`` tags it (TorchRec's planner reads the tag
    to size optimizer state)."""
    _torchrec()
    import torch
    from torchrec.modules.embedding_modules import EmbeddingBagCollection

    ebc = EmbeddingBagCollection(tables=workload_to_configs(workload),
                                 device=torch.device("meta"))
    for t in workload.tables:
        cls = _torchrec_optimizer(workload.optimizer_of(t))
        if cls is not None:
            ebc.embedding_bags[t.name].weight._optimizer_classes = [cls]
    return ebc


def plan_with_torchrec(workload: Workload, topology: Topology, *, timeout_s: int | None = None
                       ) -> tuple[Plan, float]:
    """Run TorchRec's ``EmbeddingShardingPlanner`` on our problem and cost its answer with
    our cost model.

    TorchRec gets the same tables, per-rank batch, pooling factors, optimizer, sharding types
    and kernels our enumerator offers, and the same usable memory per rank (no further
    storage reservation).

    Args:
        workload: the tables and batch.
        topology: the cluster (host groups must have equal devices per host).
        timeout_s: TorchRec's ``timeout_seconds``: its proposers stop after this long and it
            returns the best plan found so far. ``None``: TorchRec's default, no limit.

    Returns:
        (TorchRec's plan as our ``Plan``, costed by ``default_cost_model`` with solver
        ``torchrec``; TorchRec's planning wall time in seconds). The plan's
        ``provenance.solver_options["planner_cpu_s"]`` holds the process CPU seconds of the
        same call, a fairer figure on a shared machine.

    Raises:
        InfeasiblePlanError: TorchRec's planner finds no plan.
        TorchRecMissingError: TorchRec is not installed.
    """
    _torchrec()
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner
    from torchrec.distributed.planner.storage_reservations import (
        FixedPercentageStorageReservation,
    )
    from torchrec.distributed.planner.types import PlannerError

    from shardplan.estimators import default_cost_model
    from shardplan.plans import build_plan

    with _quiet_torchrec():
        tr_topo = topology_to_torchrec(topology)
        module = torchrec_module(workload)
        planner = EmbeddingShardingPlanner(
            topology=tr_topo,
            batch_size=max(1, round(workload.batch_per_rank(topology.world_size))),
            storage_reservation=FixedPercentageStorageReservation(percentage=0.0),
            constraints=torchrec_constraints(workload, topology),
            debug=False,
            timeout_seconds=timeout_s,
        )
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            tr_plan = planner.plan(module, [EmbeddingBagCollectionSharder()])
        except PlannerError as exc:
            raise InfeasiblePlanError(f"TorchRec's planner found no plan: {exc}") from None
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
    assignment = assignment_from_torchrec(tr_plan, workload, module_path="")
    cost_model = default_cost_model(workload, topology)
    plan = build_plan(workload=workload, topology=topology, cost_model=cost_model,
                      assignment=assignment, solver="torchrec",
                      solver_options={"planner": "EmbeddingShardingPlanner",
                                      "planner_cpu_s": round(cpu_seconds, 3),
                                      "timeout_s": timeout_s},
                      solve_time_s=seconds)
    return plan, seconds


def assignment_from_torchrec(sharding_plan: Any, workload: Workload, *, module_path: str = ""
                             ) -> Assignment:
    """Our Assignment (option and ranks per table, workload order) from a TorchRec plan.

    Empty shards (TorchRec's row-wise layout leaves the last ranks of small tables empty) are
    dropped.

    Raises:
        PlanError: a table is missing from the plan, or has a type or kernel we do not model.
    """
    if module_path not in sharding_plan.plan:
        raise PlanError(f"the TorchRec plan has no module {module_path!r}; it has "
                        f"{sorted(sharding_plan.plan)}", key_path="plan")
    module_plan = sharding_plan.plan[module_path]
    options, ranks = [], []
    for t in workload.tables:
        where = f"plan[{module_path!r}][{t.name}]"
        ps = module_plan.get(t.name)
        if ps is None:
            raise PlanError(f"table {t.name!r} is not in the TorchRec plan", key_path=where)
        try:
            st = ShardingType(ps.sharding_type)
        except ValueError:
            raise PlanError(f"sharding type {ps.sharding_type!r} is not one shardplan models",
                            key_path=where) from None
        kind = PLACEMENT_OF_KERNEL.get(ps.compute_kernel)
        if kind is None:
            raise PlanError(f"compute kernel {ps.compute_kernel!r} is not one shardplan models",
                            key_path=where)
        ratio = None
        if kind is PlacementKind.UVM_CACHING:
            lf = ps.cache_params.load_factor if ps.cache_params is not None else None
            ratio = lf if lf is not None else DEFAULT_CACHE_LOAD_FACTOR
        placement = Placement(kind=kind, cache_ratio=ratio)
        if st is ShardingType.DATA_PARALLEL:
            rs = tuple(sorted(ps.ranks))
            shards = tuple(ShardSpec(row_offset=0, num_rows=t.num_embeddings, col_offset=0,
                                     num_cols=t.embedding_dim) for _ in rs)
        else:
            kept = [(m, r) for m, r in zip(ps.sharding_spec.shards, ps.ranks)
                    if m.shard_sizes[0] > 0 and m.shard_sizes[1] > 0]
            shards = tuple(ShardSpec(row_offset=m.shard_offsets[0], num_rows=m.shard_sizes[0],
                                     col_offset=m.shard_offsets[1], num_cols=m.shard_sizes[1])
                           for m, _ in kept)
            rs = tuple(r for _, r in kept)
        options.append(ShardingOption(table=t.name, sharding_type=st, placement=placement,
                                      shards=shards, candidate_ranks=(None,) * len(shards)))
        ranks.append(rs)
    return Assignment(options=tuple(options), ranks=tuple(ranks))
