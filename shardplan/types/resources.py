"""Resources: values with their own arithmetic (``Memory``, ``Perf``), so solver code reads
like the problem."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from shardplan.types.enums import LANES, Lane, Stage, Tier


@dataclass(frozen=True, kw_only=True, slots=True)
class Memory:
    """Bytes per tier: device memory (HBM) and host memory (DDR)."""

    hbm: float = 0.0
    ddr: float = 0.0

    def __add__(self, other: Memory) -> Memory:
        return Memory(hbm=self.hbm + other.hbm, ddr=self.ddr + other.ddr)

    def __sub__(self, other: Memory) -> Memory:
        return Memory(hbm=self.hbm - other.hbm, ddr=self.ddr - other.ddr)

    def scale(self, k: float) -> Memory:
        return Memory(hbm=self.hbm * k, ddr=self.ddr * k)

    def fits_in(self, capacity: Memory) -> bool:
        return self.hbm <= capacity.hbm and self.ddr <= capacity.ddr

    def get(self, tier: Tier) -> float:
        return self.hbm if tier is Tier.HBM else self.ddr

    def as_dict(self) -> dict[str, float]:
        return {Tier.HBM.value: self.hbm, Tier.DDR.value: self.ddr}


@dataclass(frozen=True, kw_only=True, slots=True)
class Perf:
    """Estimated milliseconds per lane (see :class:`Lane`) of one step, on one rank.

    A stage's time on the rank is the longest of its lanes (``stage(st)``); the rank's busy
    time is the sum of its stage times (``total``). How ranks' stages compose into the step
    time is the cost model's ``StepModel``, not a property of one rank.
    """

    input_send: float = 0.0
    input_recv: float = 0.0
    fwd_compute: float = 0.0
    output_send: float = 0.0
    output_recv: float = 0.0
    grad_send: float = 0.0
    grad_recv: float = 0.0
    bwd_compute: float = 0.0
    dp_sync: float = 0.0

    def __add__(self, other: Perf) -> Perf:
        return Perf(**{ln.value: getattr(self, ln.value) + getattr(other, ln.value) for ln in LANES})

    def scale(self, k: float) -> Perf:
        return Perf(**{ln.value: getattr(self, ln.value) * k for ln in LANES})

    @classmethod
    def from_lanes(cls, values: Sequence[float]) -> Perf:
        """From per-lane values in ``LANES`` order."""
        return cls(**{ln.value: float(v) for ln, v in zip(LANES, values)})

    def as_tuple(self) -> tuple[float, ...]:
        """Per-lane values in ``LANES`` order."""
        return tuple(getattr(self, ln.value) for ln in LANES)

    def lane(self, lane: Lane) -> float:
        return getattr(self, lane.value)

    def stage(self, stage: Stage) -> float:
        """The stage's time on this rank: its longest lane."""
        return max(getattr(self, ln.value) for ln in stage.lanes)

    def get(self, stage: Stage) -> float:
        return self.stage(stage)

    @property
    def input_dist(self) -> float:
        return self.stage(Stage.INPUT_DIST)

    @property
    def fwd_comm(self) -> float:
        return self.stage(Stage.FWD_COMM)

    @property
    def bwd_comm(self) -> float:
        return self.stage(Stage.BWD_COMM)

    @property
    def compute(self) -> float:
        return self.fwd_compute + self.bwd_compute

    @property
    def comm(self) -> float:
        return self.input_dist + self.fwd_comm + self.bwd_comm + self.dp_sync

    @property
    def total(self) -> float:
        """The rank's busy time: the sum of its stage times, no overlap."""
        return self.compute + self.comm

    def as_dict(self) -> dict[str, float]:
        """Per-stage times (``Stage`` values)."""
        return {s.value: self.stage(s) for s in Stage}

    def lanes_dict(self) -> dict[str, float]:
        """Per-lane times (``Lane`` values)."""
        return {ln.value: getattr(self, ln.value) for ln in LANES}
