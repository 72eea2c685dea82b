"""How a rank times its step: the wall clock, or a virtual clock that emulates one device per
rank on a machine with fewer cores than ranks.

Both record, per stage (``shardplan.types.Stage``), the time a rank was busy and the time it
waited in a collective for the other participants, and the step time.

* :class:`WallClock`: real time. Collectives run as the runtime runs them; with
  ``measure_waits`` each is preceded by a barrier of its participants, whose duration is the
  wait (the barrier is extra work the runtime does not do: use it to see waits, not to time
  steps).
* :class:`VirtualClock`: each rank keeps a virtual time. Compute stages run one rank at a time
  (so ranks sharing cores do not slow each other) and add their measured duration. A collective
  starts when its last participant arrives (the virtual times of its participants are exchanged
  first, off the clock), its participants enter it together, and each leaves at the start plus
  its measured duration; the difference between the start and its arrival is its wait. An
  asynchronous collective (the pipelined input dist) runs at once for real but completes, in
  virtual time, at its participants' latest issue time plus its duration; whoever waits for it
  later waits only for what is left. This is the runtime's dependency structure (TorchRec's
  ``TrainPipelineSparseDist``) with measured durations: what one device per rank would see.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist

from shardplan.types import Stage

__all__ = ["ClockKind", "Clock", "WallClock", "VirtualClock", "Pending", "make_clock"]

T = TypeVar("T")


class ClockKind(StrEnum):
    WALL = "wall"
    VIRTUAL = "virtual"


@dataclass
class Pending:
    """An asynchronous collective's result: ``wait()`` returns it."""

    clock: Clock
    stage: Stage
    value: Any = None
    thread: Any = None
    done_at: float = 0.0  # virtual completion time
    error: BaseException | None = None

    def wait(self) -> Any:
        return self.clock.wait(self)


class Clock:
    """Per-stage busy and wait times of one rank, and its step times."""

    def __init__(self, rank: int, world_size: int, device: torch.device) -> None:
        self.rank = rank
        self.world_size = world_size
        self.device = device
        self.busy: dict[Stage, float] = {s: 0.0 for s in Stage}
        self.waited: dict[Stage, float] = {s: 0.0 for s in Stage}
        self._step_start = 0.0

    def reset(self) -> None:
        self.busy = {s: 0.0 for s in Stage}
        self.waited = {s: 0.0 for s in Stage}

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def now(self) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    def step_begin(self) -> None:
        self._step_start = self.now()

    def step_ms(self) -> float:
        """Time since ``step_begin``, ms."""
        return (self.now() - self._step_start) * 1e3

    def compute(self, stage: Stage, fn: Callable[[], T]) -> T:  # pragma: no cover
        raise NotImplementedError

    def collective(self, stage: Stage, fn: Callable[[], T],
                   group: dist.ProcessGroup | None = None) -> T:  # pragma: no cover
        raise NotImplementedError

    def issue(self, stage: Stage, fn: Callable[[], T],
              group: dist.ProcessGroup | None = None) -> Pending:  # pragma: no cover
        raise NotImplementedError

    def wait(self, pending: Pending) -> Any:  # pragma: no cover
        raise NotImplementedError


class WallClock(Clock):
    """Real time (see the module docstring)."""

    def __init__(self, rank: int, world_size: int, device: torch.device, *,
                 measure_waits: bool = False) -> None:
        super().__init__(rank, world_size, device)
        self.measure_waits = measure_waits

    def now(self) -> float:
        return time.perf_counter()

    def compute(self, stage: Stage, fn: Callable[[], T]) -> T:
        t0 = time.perf_counter()
        out = fn()
        self.sync()
        self.busy[stage] += (time.perf_counter() - t0) * 1e3
        return out

    def collective(self, stage: Stage, fn: Callable[[], T],
                   group: dist.ProcessGroup | None = None) -> T:
        if self.measure_waits:
            t0 = time.perf_counter()
            dist.barrier(group=group)
            self.waited[stage] += (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        out = fn()
        self.sync()
        self.busy[stage] += (time.perf_counter() - t0) * 1e3
        return out

    def issue(self, stage: Stage, fn: Callable[[], T],
              group: dist.ProcessGroup | None = None) -> Pending:
        """Run ``fn`` (collectives on their own process group) in a background thread."""
        import threading

        p = Pending(clock=self, stage=stage)
        started = time.perf_counter()

        def run() -> None:
            try:
                p.value = fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised by wait()
                p.error = exc
            p.done_at = time.perf_counter() - started

        p.thread = threading.Thread(target=run, name="input-dist", daemon=True)
        p.thread.start()
        return p

    def wait(self, pending: Pending) -> Any:
        t0 = time.perf_counter()
        pending.thread.join()
        self.waited[pending.stage] += (time.perf_counter() - t0) * 1e3
        self.busy[pending.stage] += pending.done_at * 1e3
        if pending.error is not None:
            raise pending.error
        return pending.value


class VirtualClock(Clock):
    """Emulated devices, one per rank (see the module docstring)."""

    def __init__(self, rank: int, world_size: int, device: torch.device) -> None:
        super().__init__(rank, world_size, device)
        self.v = 0.0  # seconds

    def now(self) -> float:
        return self.v

    def _latest(self, t: float, group: dist.ProcessGroup | None) -> float:
        x = torch.tensor([t], dtype=torch.float64)
        dist.all_reduce(x, op=dist.ReduceOp.MAX, group=group)
        return float(x[0])

    def compute(self, stage: Stage, fn: Callable[[], T]) -> T:
        result = None
        for turn in range(self.world_size):
            dist.barrier()
            if turn == self.rank:
                t0 = time.perf_counter()
                result = fn()
                self.sync()
                d = time.perf_counter() - t0
                self.busy[stage] += d * 1e3
                self.v += d
        dist.barrier()
        return result  # type: ignore[return-value]

    def _timed(self, fn: Callable[[], T], group: dist.ProcessGroup | None) -> tuple[T, float]:
        dist.barrier(group=group)
        t0 = time.perf_counter()
        out = fn()
        self.sync()
        return out, time.perf_counter() - t0

    def collective(self, stage: Stage, fn: Callable[[], T],
                   group: dist.ProcessGroup | None = None) -> T:
        start = self._latest(self.v, group)
        out, d = self._timed(fn, group)
        self.waited[stage] += (start - self.v) * 1e3
        self.busy[stage] += d * 1e3
        self.v = start + d
        return out

    def issue(self, stage: Stage, fn: Callable[[], T],
              group: dist.ProcessGroup | None = None) -> Pending:
        start = self._latest(self.v, group)
        out, d = self._timed(fn, group)
        self.busy[stage] += d * 1e3
        return Pending(clock=self, stage=stage, value=out, done_at=start + d)

    def wait(self, pending: Pending) -> Any:
        if pending.done_at > self.v:
            self.waited[pending.stage] += (pending.done_at - self.v) * 1e3
            self.v = pending.done_at
        return pending.value


def make_clock(kind: ClockKind | str, rank: int, world_size: int, device: torch.device,
               *, measure_waits: bool = False) -> Clock:
    """A clock of ``kind`` for this rank."""
    kind = ClockKind(kind)
    if kind is ClockKind.VIRTUAL:
        return VirtualClock(rank, world_size, device)
    return WallClock(rank, world_size, device, measure_waits=measure_waits)
