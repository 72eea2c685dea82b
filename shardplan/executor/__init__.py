"""The executor: runs a plan on real sharded embedding tables (torch.distributed; gloo on CPU
processes, NCCL on GPUs), checks it computes what the unsharded model computes, measures its
stages against the estimate, and calibrates the cost model. See ``docs/executor.md``.

Front door::

    from shardplan.executor import validate_plan, profile_plan
    report = validate_plan(plan, steps=2)       # report.passed, report.raise_on_mismatch()
    prof = profile_plan(plan, steps=10)          # prof.rows: one per rank and stage

torch is imported only when these run, so planning never needs it.
"""

from shardplan.executor.api import (
    ProfileReport,
    ProfileRow,
    ValidationMismatch,
    ValidationReport,
    check_mode_options,
    prepare,
    profile_plan,
    profile_plans,
    resolve_for_world,
    validate_plan,
)

__all__ = ["ProfileReport", "ProfileRow", "ValidationMismatch", "ValidationReport",
           "check_mode_options", "prepare",
           "profile_plan", "profile_plans", "resolve_for_world", "validate_plan"]
