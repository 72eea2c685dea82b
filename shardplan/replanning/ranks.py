"""How the ranks of an old topology map onto a changed one.

A plan names ranks by number; after a host is lost or added the numbers of a new topology
describe other devices. :func:`map_ranks` matches the devices that survive:

* host groups are matched by name (one group on each side: matched whatever the names);
* within a group, the old hosts that are not lost are matched to the new group's hosts in
  order (old host ``i`` of the group to new host ``i``); when the new group has fewer hosts
  than survive, the last ones are lost (name the lost ones with ``lost_hosts`` to say which);
  new hosts left over are added (empty);
* within a host, local rank ``i`` maps to local rank ``i``; devices beyond the new host's
  count are lost, those beyond the old host's count are added.

A surviving device keeps its data: a shard that stays on it moves nothing. Ranks of a lost
host disappear with their data (it is restored from a checkpoint, see
:mod:`shardplan.replanning.migration`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from shardplan.errors import SpecError
from shardplan.types import Topology


@dataclass(frozen=True, kw_only=True, slots=True)
class RankMap:
    """Old ranks to new ranks.

    Attributes:
        old_to_new: per old rank, the new rank of the same device, or ``None`` (lost).
        new_world: ranks of the new topology.
        lost_hosts: old host ids whose devices are all gone.
        added_hosts: new host ids none of whose devices existed.
    """

    old_to_new: tuple[int | None, ...]
    new_world: int
    lost_hosts: tuple[int, ...] = ()
    added_hosts: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        seen = [r for r in self.old_to_new if r is not None]
        if len(set(seen)) != len(seen) or any(not 0 <= r < self.new_world for r in seen):
            raise SpecError(f"old_to_new={self.old_to_new!r}: must map old ranks to distinct "
                            f"new ranks in 0..{self.new_world - 1}", key_path="rank_map")

    def new(self, old_rank: int) -> int | None:
        """The new rank of old rank ``old_rank`` (``None``: lost)."""
        return self.old_to_new[old_rank]

    @property
    def new_to_old(self) -> tuple[int | None, ...]:
        """Per new rank, the old rank of the same device, or ``None`` (added)."""
        out: list[int | None] = [None] * self.new_world
        for o, n in enumerate(self.old_to_new):
            if n is not None:
                out[n] = o
        return tuple(out)

    @property
    def identity(self) -> bool:
        """Every old rank survives with its own number, and no rank is added."""
        return (len(self.old_to_new) == self.new_world
                and all(n == o for o, n in enumerate(self.old_to_new)))

    def as_dict(self) -> dict[str, object]:
        return {"lost_hosts": list(self.lost_hosts), "added_hosts": list(self.added_hosts),
                "lost_ranks": [o for o, n in enumerate(self.old_to_new) if n is None],
                "renumbered": sum(1 for o, n in enumerate(self.old_to_new)
                                  if n is not None and n != o)}


def map_ranks(old: Topology, new: Topology, lost_hosts: Sequence[int] = ()) -> RankMap:
    """Match the devices of ``old`` to those of ``new`` (see the module docstring).

    Args:
        old: the topology the old plan was made for.
        new: the changed topology.
        lost_hosts: old host ids that are gone (default: when a group shrinks, its last
            hosts).

    Returns:
        The rank map.

    Raises:
        SpecError: a lost host the old topology does not have.
    """
    lost = sorted(set(int(h) for h in lost_hosts))
    for h in lost:
        if not 0 <= h < old.num_hosts:
            raise SpecError(f"lost host {h}: the old topology {old.name!r} has hosts "
                            f"0..{old.num_hosts - 1}", key_path="lost_hosts")
    old_groups = {g.name: gi for gi, g in enumerate(old.host_groups)}
    new_groups = {g.name: gi for gi, g in enumerate(new.host_groups)}
    pairs: list[tuple[int, int]] = [(old_groups[n], new_groups[n]) for n in old_groups
                                    if n in new_groups]
    if not pairs and len(old.host_groups) == 1 and len(new.host_groups) == 1:
        pairs = [(0, 0)]
    old_to_new: list[int | None] = [None] * old.world_size
    matched_new_hosts: set[int] = set()
    lost_all = set(lost)
    matched_old_hosts: set[int] = set()
    for ogi, ngi in pairs:
        survivors = [h for h in old.hosts_of_group(ogi) if h not in lost_all]
        targets = list(new.hosts_of_group(ngi))
        for oh, nh in zip(survivors, targets):
            matched_old_hosts.add(oh)
            matched_new_hosts.add(nh)
            for o, n in zip(old.ranks_of_host(oh), new.ranks_of_host(nh)):
                old_to_new[o] = n
    lost_out = tuple(h for h in range(old.num_hosts) if h not in matched_old_hosts)
    added = tuple(h for h in range(new.num_hosts) if h not in matched_new_hosts)
    return RankMap(old_to_new=tuple(old_to_new), new_world=new.world_size, lost_hosts=lost_out,
                   added_hosts=added)


__all__ = ["RankMap", "map_ranks"]
