"""Communication estimators: what one collective call costs, per algorithm, over the topology.

Every collective is priced as ``latency + bytes x seconds_per_byte`` for the algorithm and
protocol that are cheapest at the message size it will carry (NCCL picks the same way,
``ncclTopoGetAlgoTime``). Bandwidths come from the topology graph (:mod:`shardplan.topology`);
latencies, protocol factors and algorithm step counts from NCCL's own tuning model.

Bandwidth (seconds per byte of the buffer, each link's nominal bandwidth x the profile's
efficiency for that link type x the profile's efficiency for that collective kind):

* **all-to-all** (pairwise send/receive): a rank's bytes go evenly to the ``N`` ranks of the
  span (its own share stays local); the intra-host part goes over the device's intra-host link
  and the inter-host part over its share of the host's NICs, both at once, so the time is the
  larger of the two. Sends and receives use the two directions of full-duplex links: the cost
  model charges each direction on its own lane (:class:`shardplan.types.Lane`), in full.
* **reduce-scatter / all-gather** over all ranks, ring, hierarchical as NCCL's rail-aligned
  rings run: ``(L-1)/L`` of the buffer over the intra-host link, then ``(H-1)/H`` of the
  remaining ``1/L`` over the device's NIC share; within one host only the first part.
* **all-reduce**: ring = reduce-scatter + all-gather (twice the bytes); tree = ``2 x bytes``
  over ``min(0.9 x ring bus bandwidth, NCCL's tree cap)``.

Latency of one call (microseconds), NCCL ``src/graph/tuning.cc`` (``ncclTopoTuneModel``, NVIDIA/
nccl commit 01afd20; constants :data:`NCCL_BASE_LAT_US`, :data:`NCCL_HW_LAT_US`):

* ring reduce-scatter / all-gather: ``base + (N-1-(H-1)) x intra + (H-1) x inter`` steps;
  all-reduce ring ``2(N-1)`` steps of which ``2(H-1)`` inter-host;
* tree all-reduce: ``base + 2 x ((N/H - 1) x intra + log2(H) x inter)``;
* all-to-all (NCCL runs it as grouped send/receive, one exchange per peer, ``P`` peers at a
  time over its channels): ``base + ((L-1) x intra + (N-L) x inter) / P``, ``P`` the profile's
  ``all_to_all_peer_concurrency``: its latency grows with the number of peers;
* on a ``loopback`` fabric (gloo on one machine, no NCCL protocols) the per-step latency is the
  topology's link latency and only the ring / pairwise Simple algorithms exist;
* plus the profile's ``collective_latency_us[kind]``: the per-call software overhead beyond the
  algorithm (kernel launch, the framework's bookkeeping; measured by calibration on gloo).

Protocols (NCCL LL, LL128, Simple) trade latency for bandwidth (LL: 1/4 of the bandwidth in
multi-node or all-reduce use, else 1/3; LL128: 0.92, on NVLink fabrics only; Simple: 1). The
cost of a call is not linear in its bytes (a minimum of lines): :meth:`CollectiveModel.cost`
returns the line of the cheapest algorithm and protocol at a given size, and the cost model
linearises each collective of a sharding group at the size the workload's largest table would
make it carry (``docs/cost-model.md``): exact there and above it where the protocol no longer
changes, an upper bound elsewhere (a tangent of a concave function).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from shardplan.estimators.profiles import Coefficients, Collective
from shardplan.topology import build_graph
from shardplan.types import LinkType, NetworkType, Topology


class Algorithm(StrEnum):
    RING = "ring"
    TREE = "tree"
    PAIRWISE = "pairwise"


class Protocol(StrEnum):
    LL = "ll"
    LL128 = "ll128"
    SIMPLE = "simple"


class Fabric(StrEnum):
    """NCCL's hardware classes for per-step latency (``NCCL_HW_NVLINK/PCI/NET``), plus gloo."""

    NVLINK = "nvlink"
    PCI = "pci"
    NET = "net"
    LOOPBACK = "loopback"


# NCCL src/graph/tuning.cc (NVIDIA/nccl 01afd20): latencies in microseconds.
#: ``baseLat[algorithm][protocol]``: Tree {LL 4.4, LL128 4.4, Simple 0}, Ring {3.6, 10.0, 8.4}.
NCCL_BASE_LAT_US: dict[tuple[Algorithm, Protocol], float] = {
    (Algorithm.TREE, Protocol.LL): 4.4, (Algorithm.TREE, Protocol.LL128): 4.4,
    (Algorithm.TREE, Protocol.SIMPLE): 0.0,
    (Algorithm.RING, Protocol.LL): 3.6, (Algorithm.RING, Protocol.LL128): 10.0,
    (Algorithm.RING, Protocol.SIMPLE): 8.4,
}
#: ``hwLat[hardware][algorithm][protocol]``: per-step latency.
NCCL_HW_LAT_US: dict[Fabric, dict[tuple[Algorithm, Protocol], float]] = {
    Fabric.NVLINK: {(Algorithm.TREE, Protocol.LL): 0.52, (Algorithm.TREE, Protocol.LL128): 1.2,
                    (Algorithm.TREE, Protocol.SIMPLE): 28.0,
                    (Algorithm.RING, Protocol.LL): 0.47, (Algorithm.RING, Protocol.LL128): 1.9,
                    (Algorithm.RING, Protocol.SIMPLE): 3.4},
    Fabric.PCI: {(Algorithm.TREE, Protocol.LL): 1.0, (Algorithm.TREE, Protocol.LL128): 1.9,
                 (Algorithm.TREE, Protocol.SIMPLE): 28.0,
                 (Algorithm.RING, Protocol.LL): 1.0, (Algorithm.RING, Protocol.LL128): 2.5,
                 (Algorithm.RING, Protocol.SIMPLE): 5.7},
    Fabric.NET: {(Algorithm.TREE, Protocol.LL): 5.0, (Algorithm.TREE, Protocol.LL128): 8.5,
                 (Algorithm.TREE, Protocol.SIMPLE): 50.0,
                 (Algorithm.RING, Protocol.LL): 2.7, (Algorithm.RING, Protocol.LL128): 4.0,
                 (Algorithm.RING, Protocol.SIMPLE): 9.6},
}
NCCL_LL_INTRA_MULTINODE = 1.8  # tuning.cc: intra-host LL latency x 1.8 when nNodes > 1
NCCL_TREE_BW_FACTOR = 0.9  # tuning.cc: tree busBw = min(busBw * .9, maxTreeBw)
NCCL_TREE_MAX_BW_BYTES_PER_S = {False: 110e9, True: 80e9}  # maxTreeBw: nNodes <= 2 / > 2 (GB/s)
NCCL_LL128_BW_FACTOR = 0.92  # tuning.cc: LL128 busBw x 0.92 (120/128), ppn >= 2


#: tuning.cc: tree LL busBw x 1/3.8; LL128 x 7/9 on one node, x 0.915 across nodes.
_TREE_PROTOCOL_BW = {Protocol.LL: lambda nodes: 1.0 / 3.8,
                     Protocol.LL128: lambda nodes: 7.0 / 9.0 if nodes == 1 else 0.915,
                     Protocol.SIMPLE: lambda nodes: 1.0}


def _protocol_bw(proto: Protocol, collective: Collective, multinode: bool) -> float:
    """NCCL's bandwidth factor of a protocol (tuning.cc, "Various model refinements")."""
    if proto is Protocol.LL:
        return 0.25 if multinode or collective is Collective.ALL_REDUCE else 1.0 / 3.0
    if proto is Protocol.LL128:
        return NCCL_LL128_BW_FACTOR
    return 1.0


def fabric_of(link_type: str) -> Fabric:
    """NCCL's hardware class of a link type."""
    if link_type == LinkType.LOOPBACK.value or link_type == NetworkType.LOOPBACK.value:
        return Fabric.LOOPBACK
    if link_type.startswith("nvlink"):
        return Fabric.NVLINK
    if link_type.startswith("pcie"):
        return Fabric.PCI
    return Fabric.NET


@dataclass(frozen=True, kw_only=True, slots=True)
class LinearCost:
    """One collective call: ``latency_s + bytes x s_per_byte`` (the line of ``algorithm`` /
    ``protocol``)."""

    latency_s: float
    s_per_byte: float
    algorithm: Algorithm
    protocol: Protocol

    def time_s(self, nbytes: float) -> float:
        return self.latency_s + nbytes * self.s_per_byte


ZERO_LINE = LinearCost(latency_s=0.0, s_per_byte=0.0, algorithm=Algorithm.RING,
                       protocol=Protocol.SIMPLE)


class Span(StrEnum):
    """Which ranks a collective runs over, seen from one rank."""

    WORLD = "world"  # all ranks
    HOST = "host"  # the ranks of this rank's host
    RAIL = "rail"  # one rank per host: the ranks with this rank's local index
    GROUP = "group"  # n ranks spread over ``hosts`` hosts (row-wise over a subset)


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
        intra_fabric / inter_fabric: NCCL hardware classes of the two links.
        intra_latency_s / inter_latency_s: the topology's path latencies (used on loopback).
    """

    world: int
    local: int
    intra_bytes_per_s: float
    inter_bytes_per_s: tuple[float, ...]
    inter_share: tuple[float, ...]
    hosts: int
    intra_min_bytes_per_s: float
    nic_min_bytes_per_s: float
    intra_fabric: Fabric
    inter_fabric: Fabric
    intra_latency_s: float
    inter_latency_s: float

    @property
    def per_host(self) -> float:
        return self.world / self.hosts

    def all_to_all_s_per_byte(self, span: Span = Span.WORLD) -> float:
        """Seconds per byte a rank sends (or receives) in an all-to-all spread evenly over the
        span's ranks (its own share stays local)."""
        if span is Span.HOST:
            return (self.local - 1) / self.local / self.intra_bytes_per_s if self.local > 1 else 0.0
        if span is Span.RAIL:
            h = self.hosts
            return (h - 1) / h / min(self.inter_bytes_per_s) if h > 1 else 0.0
        intra = (self.local - 1) / self.world / self.intra_bytes_per_s if self.local > 1 else 0.0
        inter = sum(s / bw for s, bw in zip(self.inter_share, self.inter_bytes_per_s) if s > 0)
        return max(intra, inter)

    def ring_s_per_byte(self, span: Span = Span.WORLD, n: int | None = None,
                        hosts: int | None = None) -> float:
        """Seconds per byte of buffer for a ring reduce-scatter (or all-gather) over the span
        (``n`` ranks of this host for ``Span.HOST``, default all of them; ``n`` ranks on
        ``hosts`` hosts for ``Span.GROUP``)."""
        if span is Span.GROUP:
            n = self.world if n is None else n
            h = max(1, hosts or 1)
            per_host = n / h
            intra = (per_host - 1) / per_host / self.intra_min_bytes_per_s if per_host > 1 else 0.0
            inter = (h - 1) / h / per_host / self.nic_min_bytes_per_s if h > 1 else 0.0
            return intra + inter
        if span is Span.HOST:
            n = self.local if n is None else n
            return (n - 1) / n / self.intra_bytes_per_s if n > 1 else 0.0
        if span is Span.RAIL:
            h = self.hosts
            return (h - 1) / h / self.nic_min_bytes_per_s if h > 1 else 0.0
        per_host = self.per_host
        intra = (per_host - 1) / per_host / self.intra_min_bytes_per_s if per_host > 1 else 0.0
        inter = ((self.hosts - 1) / self.hosts / per_host / self.nic_min_bytes_per_s
                 if self.hosts > 1 else 0.0)
        return intra + inter

    def span_shape(self, span: Span, n: int | None = None,
                   hosts: int | None = None) -> tuple[int, int]:
        """(ranks, hosts) of a span."""
        if span is Span.GROUP:
            return (self.world if n is None else n), max(1, hosts or 1)
        if span is Span.HOST:
            return (self.local if n is None else n), 1
        if span is Span.RAIL:
            return self.hosts, self.hosts
        return self.world, self.hosts


@dataclass(frozen=True, slots=True)
class CollectiveModel:
    """Prices collective calls for a rank of one host group (see the module docstring)."""

    links: GroupLinks
    coefficients: Coefficients

    def candidates(self, collective: Collective, span: Span = Span.WORLD,
                   n: int | None = None, hosts: int | None = None) -> list[LinearCost]:
        """Every (algorithm, protocol) line NCCL (or gloo) could run this call with."""
        ln, co = self.links, self.coefficients
        ranks, nodes = ln.span_shape(span, n, hosts)
        if ranks <= 1:
            return [ZERO_LINE]
        kind_eff = co.kind_efficiency(collective)
        overhead = co.latency_s(collective)
        fabric_in = ln.intra_fabric
        fabric_hw = ln.inter_fabric if nodes > 1 else ln.intra_fabric
        gloo = Fabric.LOOPBACK in (fabric_in, fabric_hw)
        multinode = nodes > 1
        if collective is Collective.ALL_TO_ALL:
            s = ln.all_to_all_s_per_byte(span) / kind_eff
            local = (ranks if span is Span.HOST else (1 if span is Span.RAIL else ln.local))
            intra_peers, inter_peers = local - 1, ranks - local
            if gloo:
                lat = (intra_peers * ln.intra_latency_s + inter_peers * ln.inter_latency_s)
            else:
                key = (Algorithm.RING, Protocol.SIMPLE)  # p2p runs the Simple protocol
                conc = max(co.all_to_all_peer_concurrency, 1.0)
                lat = (NCCL_BASE_LAT_US[key]
                       + (intra_peers * NCCL_HW_LAT_US[fabric_in][key]
                          + inter_peers * NCCL_HW_LAT_US[Fabric.NET][key]) / conc) * 1e-6
            return [LinearCost(latency_s=overhead + lat, s_per_byte=s,
                               algorithm=Algorithm.PAIRWISE, protocol=Protocol.SIMPLE)]
        ring_s = ln.ring_s_per_byte(span, n, hosts) / kind_eff
        reduce = collective is Collective.ALL_REDUCE
        nsteps = 2 * (ranks - 1) if reduce else ranks - 1
        ninter = 2 * (nodes - 1) if reduce else nodes - 1
        out = []
        protocols = (Protocol.SIMPLE,) if gloo else (
            (Protocol.LL, Protocol.LL128, Protocol.SIMPLE) if fabric_in is Fabric.NVLINK
            else (Protocol.LL, Protocol.SIMPLE))
        for proto in protocols:
            bw = _protocol_bw(proto, collective, multinode)
            key = (Algorithm.RING, proto)
            if gloo:
                lat = ((nsteps - ninter) * ln.intra_latency_s + ninter * ln.inter_latency_s)
            else:
                intra = NCCL_HW_LAT_US[fabric_in][key] * (
                    NCCL_LL_INTRA_MULTINODE if multinode and proto is Protocol.LL else 1.0)
                lat = (NCCL_BASE_LAT_US[key] + (nsteps - ninter) * intra
                       + ninter * NCCL_HW_LAT_US[Fabric.NET][key]) * 1e-6
            factor = 2.0 if reduce else 1.0
            out.append(LinearCost(latency_s=overhead + lat, s_per_byte=factor * ring_s / bw,
                                  algorithm=Algorithm.RING, protocol=proto))
            if reduce and not gloo and span in (Span.WORLD, Span.GROUP):
                tkey = (Algorithm.TREE, proto)
                intra_t = NCCL_HW_LAT_US[fabric_in][tkey] * (
                    NCCL_LL_INTRA_MULTINODE if multinode and proto is Protocol.LL else 1.0)
                tlat = (NCCL_BASE_LAT_US[tkey]
                        + 2 * ((ranks / nodes - 1) * intra_t
                               + math.floor(math.log2(nodes)) * NCCL_HW_LAT_US[Fabric.NET][tkey])
                        ) * 1e-6
                bus = (ranks - 1) / ranks / ring_s if ring_s > 0 else math.inf
                tree_bus = min(NCCL_TREE_BW_FACTOR * bus, NCCL_TREE_MAX_BW_BYTES_PER_S[nodes > 2])
                t_bw = tree_bus * _TREE_PROTOCOL_BW[proto](nodes)
                out.append(LinearCost(latency_s=overhead + tlat, s_per_byte=2.0 / t_bw,
                                      algorithm=Algorithm.TREE, protocol=proto))
        return out

    def cost(self, collective: Collective, nbytes: float, span: Span = Span.WORLD,
             n: int | None = None, hosts: int | None = None) -> LinearCost:
        """The line of the cheapest algorithm and protocol for a call of ``nbytes``. A
        reduce-scatter may also run as an all-reduce of the same buffer (each rank keeps its
        block), so it never costs more than one."""
        cands = self.candidates(collective, span, n, hosts)
        if collective is Collective.REDUCE_SCATTER:
            cands = cands + self.candidates(Collective.ALL_REDUCE, span, n, hosts)
        return min(cands, key=lambda c: (c.time_s(nbytes), c.latency_s))

    def time_s(self, collective: Collective, nbytes: float, span: Span = Span.WORLD,
               n: int | None = None, hosts: int | None = None) -> float:
        """Seconds for one call of ``nbytes`` (the cheapest algorithm and protocol)."""
        return self.cost(collective, nbytes, span, n, hosts).time_s(nbytes)


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
                              intra_fabric=fabric_of(hg.intra_host_link.type.value),
                              inter_fabric=fabric_of(hg.network.type.value),
                              intra_latency_s=2 * up_lat,
                              inter_latency_s=inter_lat))
    return out
