"""Enums: small choice sets. Only members travel inward; strings stop at the loaders.

Also the stage/lane layout of a rank's time (``LANES``, ``STAGE_LANE_INDEX``)."""

from __future__ import annotations

from enum import StrEnum


class ShardingType(StrEnum):
    TABLE_WISE = "table_wise"
    ROW_WISE = "row_wise"
    COLUMN_WISE = "column_wise"
    TABLE_ROW_WISE = "table_row_wise"
    TABLE_COLUMN_WISE = "table_column_wise"
    DATA_PARALLEL = "data_parallel"
    GRID_SHARD = "grid_shard"  # column blocks across hosts, each row-wise within its host

    @property
    def short(self) -> str:
        return _SHORT[self]


_SHORT = {
    ShardingType.TABLE_WISE: "TW",
    ShardingType.ROW_WISE: "RW",
    ShardingType.COLUMN_WISE: "CW",
    ShardingType.TABLE_ROW_WISE: "TWRW",
    ShardingType.TABLE_COLUMN_WISE: "TWCW",
    ShardingType.DATA_PARALLEL: "DP",
    ShardingType.GRID_SHARD: "GRID",
}


class PlacementKind(StrEnum):
    """Where a shard's rows live. ``uvm_caching`` keeps a cache of hot rows in HBM."""

    HBM = "hbm"
    UVM_CACHING = "uvm_caching"
    UVM = "uvm"
    DDR = "ddr"


class DType(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"
    INT4 = "int4"

    @property
    def bits(self) -> int:
        return _DTYPE_BITS[self]

    @property
    def is_quantized(self) -> bool:
        return self in (DType.INT8, DType.INT4)


_DTYPE_BITS = {DType.FP32: 32, DType.FP16: 16, DType.BF16: 16, DType.INT8: 8, DType.INT4: 4}


class Optimizer(StrEnum):
    NONE = "none"
    SGD = "sgd"
    ADAGRAD = "adagrad"
    ROWWISE_ADAGRAD = "rowwise_adagrad"
    ADAM = "adam"


class BatchScope(StrEnum):
    PER_RANK = "per_rank"
    GLOBAL = "global"


class Mode(StrEnum):
    TRAINING = "training"
    INFERENCE = "inference"


class LinkType(StrEnum):
    NVLINK2 = "nvlink2"
    NVLINK3 = "nvlink3"
    NVLINK4 = "nvlink4"
    PCIE4 = "pcie4"
    PCIE5 = "pcie5"
    LOOPBACK = "loopback"


class NetworkType(StrEnum):
    INFINIBAND = "infiniband"
    ROCE = "roce"
    ETHERNET = "ethernet"
    LOOPBACK = "loopback"


class Tier(StrEnum):
    HBM = "hbm"
    DDR = "ddr"


class Stage(StrEnum):
    """Stages of one training step, in the order they run on every rank. Every stage ends in
    (or is) a collective that synchronises its participants."""

    INPUT_DIST = "input_dist"  # ids and lengths to the shard holders (pipelined: the next batch's)
    FWD_COMPUTE = "fwd_compute"
    FWD_COMM = "fwd_comm"  # output distribution: pooled embeddings back to the sample owners
    BWD_COMM = "bwd_comm"  # their gradients, the reverse way
    BWD_COMPUTE = "bwd_compute"
    DP_SYNC = "dp_sync"  # data-parallel gradient all-reduce

    @property
    def lanes(self) -> tuple[Lane, ...]:
        return _STAGE_LANES[self]

    @property
    def is_comm(self) -> bool:
        return self in (Stage.INPUT_DIST, Stage.FWD_COMM, Stage.BWD_COMM, Stage.DP_SYNC)


class Lane(StrEnum):
    """What a rank spends time on within a stage: compute, or one direction of its links.

    A communication stage has a send and a receive lane: a rank's links are full duplex, so
    the stage takes it the longer of the two (not their sum, and not half of either).
    The all-reduce of data-parallel gradients is symmetric (a ring sends what it receives):
    one lane.
    """

    INPUT_SEND = "input_send"
    INPUT_RECV = "input_recv"
    FWD_COMPUTE = "fwd_compute"
    OUTPUT_SEND = "output_send"
    OUTPUT_RECV = "output_recv"
    GRAD_SEND = "grad_send"
    GRAD_RECV = "grad_recv"
    BWD_COMPUTE = "bwd_compute"
    DP_SYNC = "dp_sync"

    @property
    def stage(self) -> Stage:
        return _LANE_STAGE[self]


_STAGE_LANES: dict[Stage, tuple[Lane, ...]] = {
    Stage.INPUT_DIST: (Lane.INPUT_SEND, Lane.INPUT_RECV),
    Stage.FWD_COMPUTE: (Lane.FWD_COMPUTE,),
    Stage.FWD_COMM: (Lane.OUTPUT_SEND, Lane.OUTPUT_RECV),
    Stage.BWD_COMM: (Lane.GRAD_SEND, Lane.GRAD_RECV),
    Stage.BWD_COMPUTE: (Lane.BWD_COMPUTE,),
    Stage.DP_SYNC: (Lane.DP_SYNC,),
}
_LANE_STAGE: dict[Lane, Stage] = {ln: st for st, lns in _STAGE_LANES.items() for ln in lns}
#: Lane order of every per-lane array (``Perf.as_tuple``, the solvers' load matrices).
LANES: tuple[Lane, ...] = tuple(Lane)
#: For each stage (``Stage`` order), the indices of its lanes in ``LANES``.
STAGE_LANE_INDEX: tuple[tuple[int, ...], ...] = tuple(
    tuple(LANES.index(ln) for ln in _STAGE_LANES[st]) for st in Stage)


class Composition(StrEnum):
    """How a step's time is composed from per-rank lane times (see ``StepModel``).

    ``synchronized``: every stage ends in a collective that waits for its slowest
    participant, so the step is the sum over stages of the slowest rank's stage time
    (TorchRec's critical-path estimate has this form). ``per_rank``: each rank's stages add
    up and the step is the slowest rank's sum (ranks never wait for each other: a lower bound).
    """

    SYNCHRONIZED = "synchronized"
    PER_RANK = "per_rank"


class SolveStatus(StrEnum):
    """What a solver can say of its plan (``SolveResult.status``, ``Summary.status``).

    ``optimal``: proven optimal over every enumerated option (the ILP on an unrestricted model
    reaching its gap 0); ``feasible``: a valid plan, optimality not proven.
    """

    OPTIMAL = "optimal"
    FEASIBLE = "feasible"


class MipStatus(StrEnum):
    """How a MIP or LP solve ended (``shardplan.solvers.ilp``)."""

    OPTIMAL = "optimal"
    TIME_LIMIT = "time_limit"
    NODE_LIMIT = "node_limit"
    WORK_LIMIT = "work_limit"  # HiGHS's limit checks (``solvers.ilp._WarmHiGHS``)
    INFEASIBLE = "infeasible"
    NO_SOLUTION = "no_solution"
    OTHER = "other"
