"""Which cost model made a plan: the one function that answers it.

A plan records its cost model in ``provenance.cost_model`` (``CostModel.describe()``: the
model's name, its options and, per host group, the profile with its coefficients).
:func:`cost_model_of` rebuilds that model, so a loaded plan is re-checked, explained and broken
down under exactly the model that made it, whatever profile was used then. Everything that
needs the answer calls it: loading a plan (``shardplan.plans.check_estimates``), the
executor's pre-run check, ``shardplan explain`` and :func:`~shardplan.estimators.breakdown`.

A plan made by a model shardplan cannot rebuild (a custom ``CostModel`` subclass) raises
:class:`~shardplan.errors.UnknownCostModelError`, or, with ``default_if_unknown=True``, gives
the default model with a :class:`~shardplan.errors.ShardplanWarning` saying so; never a silent
substitute.
"""

from __future__ import annotations

import warnings
from enum import Enum
from typing import Any, Mapping

from shardplan.errors import PlanError, ShardplanWarning, SpecError, UnknownCostModelError
from shardplan.estimators.cost_model import CostModelOptions, EmbeddingCostModel, default_cost_model
from shardplan.estimators.profiles import (
    Coefficients,
    DeviceProfile,
    ProfileProvenance,
    ProvenanceKind,
)
from shardplan.types import Plan

KEY = "provenance.cost_model"


def cost_model_of(plan: Plan, *, default_if_unknown: bool = False) -> EmbeddingCostModel:
    """The cost model that made ``plan``, rebuilt from its ``provenance.cost_model`` record.

    Args:
        plan: the plan.
        default_if_unknown: when the plan names a model this shardplan cannot rebuild, return
            :func:`default_cost_model` for its workload and topology with a
            ``ShardplanWarning`` instead of raising.

    Returns:
        An :class:`EmbeddingCostModel` whose ``describe()`` equals the record.

    Raises:
        UnknownCostModelError: the record names another model (and not ``default_if_unknown``).
        PlanError: the record claims to be this model but is malformed or cannot be reproduced
            (edited by hand, or written by a shardplan with other options).
    """
    rec: Mapping[str, Any] = plan.provenance.cost_model
    name = rec.get("name")
    if name != EmbeddingCostModel.name:
        if not default_if_unknown:
            raise UnknownCostModelError(
                f"the plan was made with cost model {name!r}, which this shardplan cannot "
                f"rebuild (it rebuilds {EmbeddingCostModel.name!r}); pass that model "
                "explicitly (cost_model=...)", key_path=KEY)
        cm = default_cost_model(plan.workload, plan.topology)
        warnings.warn(f"the plan was made with cost model {name!r}, which this shardplan cannot "
                      f"rebuild; using the default model {cm.name!r} instead", ShardplanWarning,
                      stacklevel=2)
        return cm
    try:
        options = CostModelOptions.from_dict(dict(rec.get("options", {})))
        profiles = [_profile(rec["profiles"][hg.name]) for hg in plan.topology.host_groups]
        cm = EmbeddingCostModel(plan.workload, plan.topology, profiles=profiles, options=options)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        detail = exc.message if isinstance(exc, SpecError) else f"{type(exc).__name__}: {exc}"
        raise PlanError(f"the plan's cost-model record is incomplete or malformed ({detail}); "
                        "re-solve the plan, or pass cost_model= explicitly", key_path=KEY) from None
    if _jsonable(cm.describe()) != _jsonable(rec):
        raise PlanError("the plan's cost-model record cannot be reproduced by this shardplan "
                        "(a field it does not know, or an edited value); re-solve the plan",
                        key_path=KEY)
    return cm


def _profile(p: Mapping[str, Any]) -> DeviceProfile:
    prov = dict(p["provenance"])
    return DeviceProfile(
        name=p["name"], device_model=p["device_model"], source=p.get("source", ""),
        provenance=ProfileProvenance(kind=ProvenanceKind(prov.pop("kind")), **prov),
        coefficients=Coefficients(**p["coefficients"]))


def _jsonable(v: Any) -> Any:
    """``v`` as JSON would give it back (tuples as lists, mappings as dicts), to compare a
    live ``describe()`` with a record read from a file."""
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, Enum):
        return v.value
    return v


__all__ = ["cost_model_of"]
