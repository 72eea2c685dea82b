"""Cost models: memory, compute and communication of sharded embedding tables.

``default_cost_model(workload, topology, profile=None)`` is what the planner uses unless told
otherwise; ``breakdown(plan)`` explains its estimates as a DataFrame. Formulas and assumptions:
``docs/cost-model.md``.
"""

from shardplan.estimators.breakdown import assignment_of, breakdown, cost_model_of, per_rank
from shardplan.estimators.comm import CollectiveModel, GroupLinks, LinearCost, group_links
from shardplan.estimators.compute import hit_rate
from shardplan.estimators.cost_model import (
    DEFAULT_PIPELINE_DEPTH,
    Component,
    CostModelOptions,
    EmbeddingCostModel,
    default_cost_model,
    resolve_profiles,
)
from shardplan.estimators.profiles import (
    DEFAULT_COEFFICIENTS,
    Coefficients,
    Collective,
    DeviceProfile,
    ProfileProvenance,
    ProvenanceKind,
    bundled_profiles,
    default_profile,
    load_profile,
    profile_for_device,
    profile_from_dict,
    profile_to_dict,
    save_profile,
    with_coefficients,
)

__all__ = [
    "DEFAULT_COEFFICIENTS", "DEFAULT_PIPELINE_DEPTH", "Coefficients", "Collective", "Component",
    "CollectiveModel", "CostModelOptions", "DeviceProfile", "LinearCost", "EmbeddingCostModel", "GroupLinks",
    "ProfileProvenance", "ProvenanceKind", "assignment_of", "breakdown", "bundled_profiles",
    "cost_model_of", "default_cost_model", "default_profile", "group_links", "hit_rate",
    "load_profile", "per_rank", "profile_for_device", "profile_from_dict", "profile_to_dict",
    "resolve_profiles", "save_profile", "with_coefficients",
]
