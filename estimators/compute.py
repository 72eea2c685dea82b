"""Compute estimators: lookup (forward) and update (backward) time from the bytes they move.

Embedding kernels are memory-bound: time = bytes / (nominal bandwidth x efficiency). Rows are
read from where the placement keeps them (HBM, HBM cache + PCIe for misses, PCIe for UVM, host
DRAM for ``ddr``); indices, pooled outputs and their gradients always live in HBM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shardplan.types import AccessSkew, IdOrder, PlacementKind

_HARMONIC_EXACT_TERMS = 32


def _harmonic(m: float, s: float) -> float:
    """Generalised harmonic number H(m, s) = sum_{i<=m} i^-s: the first 32 terms exactly, the
    tail by Euler-Maclaurin (relative error far below 0.1%); linear between integers."""
    if m <= 0.0:
        return 0.0
    a = _HARMONIC_EXACT_TERMS
    if m <= a:
        k = int(m)
        return sum(i ** -s for i in range(1, k + 1)) + (m - k) * (k + 1) ** -s
    head = sum(i ** -s for i in range(1, a + 1))
    if abs(s - 1.0) < 1e-12:
        integral = math.log(m / a)
    else:
        integral = (m ** (1.0 - s) - a ** (1.0 - s)) / (1.0 - s)
    # sum_{i=a+1}^{m} f(i) ~ int_a^m f + (f(m) - f(a))/2 + (f'(m) - f'(a))/12, f = x^-s
    return head + integral + (m ** -s - a ** -s) / 2.0 + s * (a ** (-s - 1.0) - m ** (-s - 1.0)) / 12.0


def popularity_cdf(access: AccessSkew | None, fraction: float, rows: int) -> float:
    """Share of a table's lookups that go to its hottest ``fraction`` of rows.

    * uniform access (``access`` None): ``fraction``;
    * Zipf exponent s over the rows: H(k, s) / H(rows, s) with k = fraction x rows;
    * hot rows: a fraction ``hot_row_fraction`` of rows gets ``hot_access_fraction`` of the
      accesses, uniform within the hot and within the cold rows;
    * only a measured hit curve: the curve (an LRU cache's hit rate, a lower bound of this).
    """
    c = min(max(fraction, 0.0), 1.0)
    if c <= 0.0:
        return 0.0
    if c >= 1.0:
        return 1.0
    if access is None:
        return c
    if access.zipf_exponent is not None:
        k = max(c * rows, 1.0)
        return min(1.0, _harmonic(k, access.zipf_exponent) / _harmonic(float(rows), access.zipf_exponent))
    if access.hot_row_fraction is not None:
        hrf, haf = access.hot_row_fraction, access.hot_access_fraction
        if c <= hrf:
            return haf * c / hrf
        return haf + (1.0 - haf) * (c - hrf) / (1.0 - hrf)
    return _interpolate(access.hit_curve or (), c)


def _interpolate(points: tuple[tuple[float, float], ...], x: float) -> float:
    """Piecewise-linear through (0, 0), ``points`` and (1, 1)."""
    pts = [(0.0, 0.0), *points, (1.0, 1.0)]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1
    return 1.0


def hit_rate(access: AccessSkew | None, cache_ratio: float, rows: int) -> float:
    """Fraction of lookups served by an HBM cache holding ``cache_ratio`` of ``rows`` rows.

    A measured hit curve (``access.hit_curve``, from ``shardplan stats``) is used as it is;
    otherwise the model assumes an ideal static cache of the hottest rows (an upper bound
    for FBGEMM's LRU/LFU): :func:`popularity_cdf`.
    """
    c = min(max(cache_ratio, 0.0), 1.0)
    if c >= 1.0:
        return 1.0
    if access is not None and access.hit_curve is not None:
        return _interpolate(access.hit_curve, c)
    if access is None:
        return c
    return popularity_cdf(access, c, rows)


def block_share(access: AccessSkew | None, row_offset: int, num_rows: int, rows: int) -> float:
    """Share of a table's lookups that fall in rows ``[row_offset, row_offset + num_rows)``.

    Hashed ids (the default) spread hot rows evenly: the share is the block's share of rows.
    Frequency-ordered ids (``access.id_order`` ``frequency``) put the hottest rows first: the
    share is the popularity CDF's increase over the block (:func:`popularity_cdf`).
    """
    if rows <= 0:
        return 0.0
    if access is None or access.id_order is IdOrder.HASHED:
        return num_rows / rows
    lo = popularity_cdf(access, row_offset / rows, rows)
    hi = popularity_cdf(access, (row_offset + num_rows) / rows, rows)
    return max(hi - lo, 0.0)


@dataclass(frozen=True, kw_only=True, slots=True)
class Bandwidths:
    """Effective bytes/s one device gets, per place data is read from (nominal x efficiency)."""

    hbm_fwd: float
    hbm_bwd: float
    pcie: float
    ddr: float


def row_read_s_per_byte(kind: PlacementKind, bw: Bandwidths, hit: float, backward: bool) -> float:
    """Seconds per byte of embedding rows read (or read-modify-written) under a placement."""
    hbm = bw.hbm_bwd if backward else bw.hbm_fwd
    if kind is PlacementKind.HBM:
        return 1.0 / hbm
    if kind is PlacementKind.UVM_CACHING:
        return hit / hbm + (1.0 - hit) / bw.pcie
    if kind is PlacementKind.UVM:
        return 1.0 / bw.pcie
    return 1.0 / bw.ddr  # PlacementKind.DDR


def forward_bytes(ids: float, row_bytes: float, samples: float, cols: int,
                  out_bytes: float, id_bytes: float) -> tuple[float, float]:
    """(row bytes, other HBM bytes) of a pooled lookup: read ``ids`` rows, read the ids, write
    one pooled vector per (sample, feature)."""
    return ids * row_bytes, ids * id_bytes + samples * cols * out_bytes


def distinct_rows(ids: float, rows: int) -> float:
    """Expected distinct rows among ``ids`` lookups spread uniformly over ``rows`` rows:
    ``rows x (1 - exp(-ids / rows))`` (balls into bins). Uniform (hashed) ids give the most
    distinct rows for a given count, so for skewed access this is an upper bound."""
    if rows <= 0 or ids <= 0:
        return 0.0
    return min(float(ids), rows * -math.expm1(-ids / rows))  # <= ids, also in rounding


def backward_bytes(ids: float, row_bytes: float, state_bytes_per_row: float, samples: float,
                   cols: int, grad_bytes: float, workspace_bytes_per_id: float,
                   rows: int | None = None) -> tuple[float, float]:
    """(row bytes, other HBM bytes) of a fused backward + optimizer: read the pooled output
    gradient, sort the ids (workspace written and read), then read-modify-write each distinct
    looked-up row and its optimizer state once (FBGEMM's backward sorts the ids and updates
    each distinct row once; :func:`distinct_rows`, uniform ids). ``rows=None``: per id."""
    touched = ids if rows is None else min(ids, distinct_rows(ids, rows))
    rows_rmw = touched * 2.0 * (row_bytes + state_bytes_per_row)
    other = samples * cols * grad_bytes + 2.0 * ids * workspace_bytes_per_id
    return rows_rmw, other
