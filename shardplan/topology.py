"""The topology as a graph, and the bandwidth and latency between any two ranks.

Nodes: ``("rank", r)`` for each device, ``("host", h)`` for each host's fabric (NVSwitch or
PCIe switch) and one ``("network", 0)`` for the cluster network. Edges carry
``bandwidth_bytes_per_s`` (per direction) and ``latency_s``:

* rank - host: the device's intra-host link (NVLink or PCIe);
* host - network: the host's NICs together (shared by its devices).

Between two ranks the path's slowest edge sets the bandwidth and the latencies add up.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import networkx as nx

from shardplan.types import Topology


@dataclass(frozen=True, kw_only=True, slots=True)
class PathLink:
    bandwidth_bytes_per_s: float
    latency_s: float
    hops: int


def build_graph(topology: Topology) -> nx.Graph:
    """The topology as an undirected networkx graph (see module docstring)."""
    g = nx.Graph(name=topology.name)
    g.add_node(("network", 0), kind="network")
    for h in range(topology.num_hosts):
        ranks = topology.ranks_of_host(h)
        group = topology.group_of(ranks[0])
        g.add_node(("host", h), kind="host", group=group.name)
        g.add_edge(("host", h), ("network", 0), kind=group.network.type.value,
                   bandwidth_bytes_per_s=group.network.bandwidth_bytes_per_s,
                   latency_s=group.network.latency_s)
        for r in ranks:
            g.add_node(("rank", r), kind="rank", model=group.device.model, host=h)
            g.add_edge(("rank", r), ("host", h), kind=group.intra_host_link.type.value,
                       bandwidth_bytes_per_s=group.intra_host_link.bandwidth_bytes_per_s,
                       latency_s=group.intra_host_link.latency_s)
    return g


@lru_cache(maxsize=64)
def _graph(topology: Topology) -> nx.Graph:
    return build_graph(topology)


def path_link(topology: Topology, a: int, b: int) -> PathLink:
    """Bandwidth (slowest edge) and latency (sum) on the path between ranks ``a`` and ``b``."""
    if a == b:
        return PathLink(bandwidth_bytes_per_s=float("inf"), latency_s=0.0, hops=0)
    g = _graph(topology)
    path = nx.shortest_path(g, ("rank", a), ("rank", b))
    edges = [g.edges[u, v] for u, v in zip(path, path[1:])]
    return PathLink(
        bandwidth_bytes_per_s=min(e["bandwidth_bytes_per_s"] for e in edges),
        latency_s=sum(e["latency_s"] for e in edges),
        hops=len(edges),
    )
