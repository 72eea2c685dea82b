"""Communication estimators: alpha-beta costs of the collectives, over the topology graph.

For a rank of host group ``g`` the model needs, per collective, seconds per byte (beta) and a
fixed latency (alpha). Both come from the topology graph (:mod:`shardplan.topology`):

* intra-host traffic uses the device's link into its host fabric (NVLink/NVSwitch, PCIe);
* inter-host traffic crosses rank -> host -> network -> host' -> rank'. The host's NIC
  bandwidth (edge host - network) is shared by the host's devices, which all send at once in
  a collective, so each device gets ``nic / devices_per_host``. The slowest edge decides;
* each link type's nominal bandwidth is scaled by the profile's collective efficiency.

All-to-all: a rank's bytes go evenly to all ``N`` ranks (its own share stays local); intra- and
inter-host parts flow concurrently, so the time is the larger of the two. Reduce-scatter (and
all-gather, all-reduce = both) over all ranks is hierarchical, as NCCL's rail-aligned rings
behave: a ring inside each host moves ``(L-1)/L`` of the buffer over the intra-host link, then
a ring across the ``H`` hosts among ranks of the same local index moves ``(H-1)/H`` of the
remaining ``1/L`` over each device's share of its host's NICs; the two steps add up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shardplan.estimators.profiles import Collective, Coefficients
from shardplan.topology import build_graph
from shardplan.types import Topology


@dataclass(frozen=True, kw_only=True, slots=True)
class GroupLinks:
    """Effective link figures for a rank of one host group (bandwidths already x efficiency).

    Attributes:
        world: ranks in the cluster.
        local: ranks on this rank's host.
        intra_bytes_per_s: to another device of the same host.
        inter_bytes_per_s: to a device of another host, per destination group (by group index).
        inter_share: fraction of all ranks that sit on other hosts, per destination group.
        hosts: hosts in the cluster.
        intra_min_bytes_per_s: the slowest intra-host link of any group (hosts run their
            intra-host steps at once; the slowest finishes last).
        nic_min_bytes_per_s: the smallest per-device NIC share of any group.
        intra_latency_s / inter_latency_s: path latencies (sum of edge latencies).
    """

    world: int
    local: int
    intra_bytes_per_s: float
    inter_bytes_per_s: tuple[float, ...]
    inter_share: tuple[float, ...]
    hosts: int
    intra_min_bytes_per_s: float
    nic_min_bytes_per_s: float
    intra_latency_s: float
    inter_latency_s: float

    @property
    def max_latency_s(self) -> float:
        return self.inter_latency_s if any(self.inter_share) else self.intra_latency_s

    def all_to_all_s_per_byte(self) -> float:
        """Seconds per byte a rank sends (or receives) in an all-to-all spread over all ranks."""
        intra = (self.local - 1) / self.world / self.intra_bytes_per_s if self.local > 1 else 0.0
        inter = sum(s / bw for s, bw in zip(self.inter_share, self.inter_bytes_per_s) if s > 0)
        return max(intra, inter)

    def ring_s_per_byte(self, n: int | None = None, intra_host: bool = False) -> float:
        """Seconds per byte of buffer for a reduce-scatter (or all-gather) ring over ``n`` ranks
        (default: all), within this host if ``intra_host``."""
        if intra_host:
            n = self.local if n is None else n
            return (n - 1) / n / self.intra_bytes_per_s if n > 1 else 0.0
        if n is not None and n != self.world:
            raise ValueError("ring collectives over a subset of hosts are not modelled")
        per_host = self.world / self.hosts  # ranks per host (mean, for mixed groups)
        intra = (per_host - 1) / per_host / self.intra_min_bytes_per_s if per_host > 1 else 0.0
        inter = ((self.hosts - 1) / self.hosts / per_host / self.nic_min_bytes_per_s
                 if self.hosts > 1 else 0.0)
        return intra + inter

    def latency_s(self, collective: Collective, coeffs: Coefficients, n: int | None = None,
                  intra_host: bool = False) -> float:
        """Fixed time of one call: the profile's latency plus the hops the algorithm waits on
        (all-to-all: one path; reduce-scatter/all-gather: the hierarchical rings' steps, L-1
        intra-host and H-1 inter-host hops; all-reduce: a double binary tree, 2 log2 n steps,
        as NCCL uses for small messages)."""
        n = (self.local if intra_host else self.world) if n is None else n
        if n <= 1:
            return 0.0
        if intra_host:
            return coeffs.latency_s(collective) + (n - 1) * self.intra_latency_s
        if collective is Collective.ALL_TO_ALL:
            return coeffs.latency_s(collective) + self.max_latency_s
        if collective is Collective.ALL_REDUCE:
            return coeffs.latency_s(collective) + 2 * math.ceil(math.log2(n)) * self.max_latency_s
        per_host = max(round(self.world / self.hosts), 1)
        return (coeffs.latency_s(collective) + (per_host - 1) * self.intra_latency_s
                + (self.hosts - 1) * self.inter_latency_s)


def group_links(topology: Topology, coefficients: list[Coefficients]) -> list[GroupLinks]:
    """:class:`GroupLinks` for every host group, read from the topology graph.

    Args:
        topology: the cluster.
        coefficients: the coefficients of each host group (same order as ``host_groups``).

    Returns:
        One entry per host group.
    """
    g = build_graph(topology)
    world = topology.world_size
    first_rank, first_host = [], []
    for gi in range(len(topology.host_groups)):
        r = next(ri for ri in topology.ranks if ri.group == gi)
        first_rank.append(r.rank)
        first_host.append(r.host)

    def up(gi: int) -> tuple[float, float]:  # rank -> host edge, efficiency applied
        e = g.edges[("rank", first_rank[gi]), ("host", first_host[gi])]
        return e["bandwidth_bytes_per_s"] * coefficients[gi].link_efficiency(e["kind"]), e["latency_s"]

    def nic(gi: int) -> tuple[float, float]:  # host -> network edge, shared by the host's devices
        e = g.edges[("host", first_host[gi]), ("network", 0)]
        share = topology.host_groups[gi].devices_per_host
        return (e["bandwidth_bytes_per_s"] / share * coefficients[gi].link_efficiency(e["kind"]),
                e["latency_s"])

    out = []
    ngroups = len(topology.host_groups)
    # ranks on other hosts, per group: all of other groups' ranks, and this group's other hosts
    for gi, hg in enumerate(topology.host_groups):
        up_bw, up_lat = up(gi)
        nic_bw, nic_lat = nic(gi)
        inter_bw, shares = [], []
        for gj, hj in enumerate(topology.host_groups):
            remote = hj.num_devices - (hg.devices_per_host if gj == gi else 0)
            shares.append(remote / world)
            u2, _ = up(gj)
            n2, _ = nic(gj)
            inter_bw.append(min(up_bw, nic_bw, n2, u2))
        inter_lat = max((up_lat + nic_lat + nic(gj)[1] + up(gj)[1]) for gj in range(ngroups))
        out.append(GroupLinks(world=world, local=hg.devices_per_host, intra_bytes_per_s=up_bw,
                              inter_bytes_per_s=tuple(inter_bw), inter_share=tuple(shares),
                              hosts=topology.num_hosts,
                              intra_min_bytes_per_s=min(up(gj)[0] for gj in range(ngroups)),
                              nic_min_bytes_per_s=min(nic(gj)[0] for gj in range(ngroups)),
                              intra_latency_s=2 * up_lat,
                              inter_latency_s=inter_lat))
    return out
