"""Cost models: memory, compute and communication of sharded embedding tables.

``default_cost_model(workload, topology)`` is what the planner uses unless told otherwise.
"""

from shardplan.estimators.cost_model import EmbeddingCostModel, default_cost_model

__all__ = ["EmbeddingCostModel", "default_cost_model"]
