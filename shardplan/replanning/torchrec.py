"""A re-plan as TorchRec 1.8's ``DistributedModelParallel.reshard`` argument.

``DMP.reshard(changed_shard_to_params, sharded_module_fqn=None)`` takes, per sharded module
FQN, ``(data_volume, EmbeddingModuleShardingPlan)`` holding only the tables whose ranks
change (TorchRec's ``output_sharding_plans_delta``), and moves their weights and optimizer
state between the ranks of the running job (point-to-point, ``dynamic_sharding.py``). In
torchrec 1.8 it handles table-wise and column-wise tables only (it asserts so), within the
same process group: it cannot add or remove ranks. :func:`reshard_delta` builds that argument
from two shardplan plans and refuses what ``reshard`` cannot do, naming the tables; those
changes need a restart from a checkpoint with the new plan (``docs/torchrec.md``).
"""

from __future__ import annotations

from typing import Any

from shardplan.errors import PlanError
from shardplan.replanning.diff import diff_plans
from shardplan.types import Plan, ShardingType

#: The sharding types torchrec 1.8's ``reshard`` moves (``dynamic_sharding.update_state_dict``).
RESHARDABLE = (ShardingType.TABLE_WISE, ShardingType.COLUMN_WISE)


def changed_tables(old: Plan, new: Plan) -> list[str]:
    """Tables whose shards (rows, columns or ranks) differ between the plans, in plan order."""
    before = {t.name: t for t in old.tables}
    return [t.name for t in new.tables
            if t.name not in before or before[t.name].shards != t.shards]


def reshard_delta(old: Plan, new: Plan, *, module_path: str = "",
                  compute_device: str | None = None) -> dict[str, tuple[float, Any]]:
    """``{module_path: (MiB moved, EmbeddingModuleShardingPlan of the changed tables)}`` for
    ``DistributedModelParallel.reshard``.

    Args:
        old: the plan the job runs.
        new: the plan to move to (same topology and tables).
        module_path: the EBC's FQN in the model given to DMP.
        compute_device: ``cpu`` or ``cuda`` (default: from the topology).

    Returns:
        The argument of ``reshard``; its volume is shardplan's estimate of the bytes moved
        (weights and optimizer state), in MiB as TorchRec's own delta reports it.

    Raises:
        PlanError: the plans differ in ranks or tables, or a changed table is (or becomes)
            something other than table-wise or column-wise; the message names them.
        TorchRecMissingError: TorchRec is not installed.
    """
    from shardplan.torchrec_interop import to_torchrec_plan

    if old.topology != new.topology:
        raise PlanError("reshard moves shards within the running job: the plans' topologies "
                        "differ (a lost or added host needs a restart from a checkpoint with "
                        "the new plan)", key_path="topology")
    if [t.name for t in old.tables] != [t.name for t in new.tables]:
        raise PlanError("reshard needs the same tables in both plans; added or removed tables "
                        "need a restart from a checkpoint with the new plan", key_path="tables")
    changed = changed_tables(old, new)
    before = {t.name: t for t in old.tables}
    bad = [n for n in changed if before[n].sharding_type not in RESHARDABLE
           or new.table(n).sharding_type not in RESHARDABLE]
    if bad:
        raise PlanError("torchrec 1.8 reshards table-wise and column-wise tables only; these "
                        f"change otherwise: {', '.join(bad)} (restart from a checkpoint with "
                        "the new plan, or re-plan with their sharding types constrained)",
                        key_path="tables")
    new_tr = to_torchrec_plan(new, module_path=module_path, compute_device=compute_device)
    module_plan = new_tr.plan[module_path]
    from torchrec.distributed.types import EmbeddingModuleShardingPlan

    delta = EmbeddingModuleShardingPlan({n: module_plan[n] for n in changed})
    volume_mib = diff_plans(old, new).total_bytes / 2**20
    return {module_path: (volume_mib, delta)}


__all__ = ["RESHARDABLE", "changed_tables", "reshard_delta"]
