"""The topology value types: devices, hosts, links, host groups and the ranks they make
(``Topology``). The graph built from them is :mod:`shardplan.topology`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from shardplan.types.checks import _check, _is_int
from shardplan.types.enums import LinkType, NetworkType
from shardplan.types.resources import Memory

if TYPE_CHECKING:  # pragma: no cover
    import networkx as nx


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceModel:
    """An accelerator (or a CPU process standing in for one)."""

    model: str
    hbm_capacity_bytes: int
    hbm_bandwidth_bytes_per_s: float

    def __post_init__(self) -> None:
        _check(self.hbm_capacity_bytes > 0, "hbm_capacity", self.hbm_capacity_bytes, "must be > 0")
        _check(self.hbm_bandwidth_bytes_per_s > 0, "hbm_bandwidth",
               self.hbm_bandwidth_bytes_per_s, "must be > 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class HostSpec:
    ddr_capacity_bytes: int
    ddr_bandwidth_bytes_per_s: float
    pcie_bandwidth_bytes_per_s: float

    def __post_init__(self) -> None:
        _check(self.ddr_capacity_bytes >= 0, "ddr_capacity", self.ddr_capacity_bytes, "must be >= 0")
        _check(self.ddr_bandwidth_bytes_per_s > 0, "ddr_bandwidth",
               self.ddr_bandwidth_bytes_per_s, "must be > 0")
        _check(self.pcie_bandwidth_bytes_per_s > 0, "pcie_bandwidth",
               self.pcie_bandwidth_bytes_per_s, "must be > 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class Link:
    """A link: bandwidth per direction and one-way latency."""

    type: LinkType | NetworkType
    bandwidth_bytes_per_s: float
    latency_s: float

    def __post_init__(self) -> None:
        _check(self.bandwidth_bytes_per_s > 0, "bandwidth", self.bandwidth_bytes_per_s, "must be > 0")
        _check(self.latency_s >= 0, "latency", self.latency_s, "must be >= 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class HostGroup:
    """Identical hosts. A heterogeneous cluster has several groups.

    Attributes:
        intra_host_link: each device's link into the host fabric (NVSwitch or PCIe switch).
        network: each host's link to the cluster network; ``bandwidth_bytes_per_s`` is the
            host's total over all its NICs, shared by its devices.
    """

    name: str
    hosts: int
    devices_per_host: int
    device: DeviceModel
    host: HostSpec
    intra_host_link: Link
    network: Link

    def __post_init__(self) -> None:
        _check(_is_int(self.hosts) and self.hosts > 0, "hosts", self.hosts, "must be a positive integer")
        _check(_is_int(self.devices_per_host) and self.devices_per_host > 0, "devices_per_host",
               self.devices_per_host, "must be a positive integer")

    @property
    def num_devices(self) -> int:
        return self.hosts * self.devices_per_host


@dataclass(frozen=True, kw_only=True, slots=True)
class RankInfo:
    rank: int
    host: int
    local_rank: int
    group: int  # index into Topology.host_groups: ranks of one group cost the same


@dataclass(frozen=True, kw_only=True, slots=True)
class Topology:
    """Hosts, devices and links. Ranks are numbered host by host, group by group.

    Attributes:
        hbm_reserved_fraction: share of each device's HBM kept for the dense model, activations
            and the allocator; the planner may use the rest.
        workload_path: a default workload named by the topology file, if any.
    """

    name: str
    host_groups: tuple[HostGroup, ...]
    hbm_reserved_fraction: float = 0.0
    description: str = ""
    workload_path: str | None = field(default=None, compare=False)
    _ranks: tuple[RankInfo, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check(len(self.host_groups) > 0, "host_groups", "[]", "a topology needs a host group")
        _check(0.0 <= self.hbm_reserved_fraction < 1.0, "hbm_reserved_fraction",
               self.hbm_reserved_fraction, "must be in [0, 1)")
        names = [g.name for g in self.host_groups]
        _check(len(set(names)) == len(names), "host_groups", names, "group names must be unique")
        ranks, host = [], 0
        for gi, g in enumerate(self.host_groups):
            for _ in range(g.hosts):
                for lr in range(g.devices_per_host):
                    ranks.append(RankInfo(rank=len(ranks), host=host, local_rank=lr, group=gi))
                host += 1
        object.__setattr__(self, "_ranks", tuple(ranks))

    @property
    def world_size(self) -> int:
        return len(self._ranks)

    @property
    def num_hosts(self) -> int:
        return sum(g.hosts for g in self.host_groups)

    @property
    def ranks(self) -> tuple[RankInfo, ...]:
        return self._ranks

    def rank(self, r: int) -> RankInfo:
        return self._ranks[r]

    def group_of(self, r: int) -> HostGroup:
        return self.host_groups[self._ranks[r].group]

    def ranks_of_host(self, host: int) -> tuple[int, ...]:
        return tuple(ri.rank for ri in self._ranks if ri.host == host)

    def hosts_of_group(self, gi: int) -> tuple[int, ...]:
        return tuple(sorted({ri.host for ri in self._ranks if ri.group == gi}))

    def capacity(self, r: int) -> Memory:
        """Usable bytes per tier on rank ``r``: HBM less the reserve; the host's DDR split
        evenly among its devices."""
        g = self.group_of(r)
        return Memory(
            hbm=g.device.hbm_capacity_bytes * (1.0 - self.hbm_reserved_fraction),
            ddr=g.host.ddr_capacity_bytes / g.devices_per_host,
        )

    def sharding_group(self, replicas: int) -> Topology:
        """The topology one sharding group of a 2D plan sees (TorchRec's ``DMPCollection``):
        the model is sharded over ``world / replicas`` ranks and replicated ``replicas`` times,
        each replica on ranks of the same host (TorchRec's default: the replicas' weight sync
        runs over the intra-host fabric). Every host keeps ``devices_per_host / replicas`` of
        its devices in the group, with that share of the host's NICs, DDR and DDR bandwidth.

        Raises:
            ValueError: ``replicas`` does not divide every group's devices per host.
        """
        if replicas == 1:
            return self
        groups = []
        for g in self.host_groups:
            _check(replicas >= 1 and g.devices_per_host % replicas == 0, "replicas", replicas,
                   f"must divide the {g.devices_per_host} devices per host of group {g.name!r}")
            groups.append(replace(
                g, devices_per_host=g.devices_per_host // replicas,
                host=replace(g.host, ddr_capacity_bytes=g.host.ddr_capacity_bytes // replicas,
                             ddr_bandwidth_bytes_per_s=g.host.ddr_bandwidth_bytes_per_s / replicas),
                network=replace(g.network,
                                bandwidth_bytes_per_s=g.network.bandwidth_bytes_per_s / replicas)))
        return Topology(name=f"{self.name}/{replicas}x", host_groups=tuple(groups),
                        hbm_reserved_fraction=self.hbm_reserved_fraction,
                        description=f"one of {replicas} sharding groups of {self.name}")

    def graph(self) -> nx.Graph:
        """The topology as a networkx graph (built by :func:`shardplan.topology.build_graph`)."""
        from shardplan.topology import build_graph

        return build_graph(self)
