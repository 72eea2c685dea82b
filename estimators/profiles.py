"""Device profiles: the cost model's coefficients, read from YAML (datasheet or measured).

A profile applies to one ``DeviceModel.model`` (``H100-SXM-80GB``, ``CPU``, ...). The cost model
takes one per host group: a profile the caller passes, else the bundled one for the group's
device model (``estimators/profiles/*.yaml``), else :data:`DEFAULT_COEFFICIENTS` under the name
``defaults``. Which one was used is recorded in ``CostModel.describe()`` and so in the plan.

The file format is the contract with the executor's ``shardplan calibrate``::

    format_version: 1
    name: cpu-gloo
    device_model: CPU
    provenance: {kind: measured, date: "2026-11-26", hardware: "...", command: "..."}
    coefficients:
      lookup_bandwidth_efficiency: 0.5
      ...
      collective_bandwidth_efficiency: {nvlink4: 0.75, infiniband: 0.8}
      collective_latency_us: {all_to_all: 20.0, reduce_scatter: 20.0, all_reduce: 30.0}
      collective_kind_efficiency: {all_to_all: 1.0, reduce_scatter: 0.5, all_reduce: 0.3}

Every coefficient has a default, so a profile may give a subset; unknown keys are an error
naming the file and key.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml

from shardplan.errors import ShardplanWarning, SpecError
from shardplan.parsing import Ctx, Reader, compose_yaml, read_text
from shardplan.types import LinkType, NetworkType

FORMAT_VERSION = 1
PROFILES_PACKAGE = "shardplan.estimators"


class Collective(StrEnum):
    """Collectives whose fixed latency a profile gives. All-gather uses ``reduce_scatter``'s."""

    ALL_TO_ALL = "all_to_all"
    REDUCE_SCATTER = "reduce_scatter"
    ALL_REDUCE = "all_reduce"


class ProvenanceKind(StrEnum):
    MEASURED = "measured"
    DATASHEET = "datasheet"


LINK_TYPES: tuple[str, ...] = tuple(sorted({m.value for m in LinkType} | {m.value for m in NetworkType}))

# Defaults. Each is an ASSUMPTION unless a source is named; bundled datasheet profiles restate
# them per device and calibration (`shardplan calibrate`) replaces them with measurements.
DEFAULT_LOOKUP_EFFICIENCY = 0.6  # FBGEMM TBE forward reaches roughly half to two-thirds of HBM peak on large batches (FBGEMM TBE benchmarks); assumption
DEFAULT_BACKWARD_EFFICIENCY = 0.4  # fused backward+optimizer: sort, dedup, read-modify-write; lower than forward (assumption)
DEFAULT_KERNEL_OVERHEAD_US = 10.0  # CUDA launch (~5 us) plus TBE setup per batched kernel (assumption)
DEFAULT_PER_TABLE_OVERHEAD_US = 1.0  # per table/shard bookkeeping inside one batched kernel (assumption)
DEFAULT_DDR_EFFICIENCY = 0.5  # random row gathers from host DRAM vs the DIMMs' streaming peak (assumption)
DEFAULT_PCIE_EFFICIENCY = 0.3  # random row gathers over PCIe (UVM) are small transactions; TorchRec assumes 0.1 (constants.kernel_bw_lookup: hbm_to_ddr_mem_bw / 10); assumption
DEFAULT_PIPELINE_OVERLAP = 1.0  # TorchRec's TrainPipelineSparseDist hides the input dist behind compute entirely (its own premise; comms on their own CUDA stream); assumption until measured (`shardplan calibrate --plans`)
DEFAULT_A2A_PEER_CONCURRENCY = 8.0  # peers an NCCL all-to-all exchanges with at once (grouped send/recv spread over its p2p channels); assumption, calibrate on the target
DEFAULT_COLLECTIVE_EFFICIENCY: Mapping[str, float] = MappingProxyType({
    # achieved (NCCL bus bandwidth) / nominal per-direction link bandwidth; approximate figures
    # of published nccl-tests runs on DGX A100 / H100; assumptions until calibrated.
    "nvlink2": 0.75, "nvlink3": 0.75, "nvlink4": 0.75,
    "pcie4": 0.6, "pcie5": 0.6,
    "infiniband": 0.75, "roce": 0.7, "ethernet": 0.5,
    "loopback": 1.0,
})
DEFAULT_COLLECTIVE_LATENCY_US: Mapping[str, float] = MappingProxyType({
    # per-call software overhead on top of the algorithm's latency (estimators.comm: NCCL's
    # base and per-step latencies): a kernel launch plus c10d's bookkeeping, ~5 us (assumption)
    "all_to_all": 5.0, "reduce_scatter": 5.0, "all_reduce": 5.0,
})
DEFAULT_COLLECTIVE_KIND_EFFICIENCY: Mapping[str, float] = MappingProxyType({
    # factor on the link efficiency per collective kind (all-gather uses reduce_scatter's):
    # 1.0 = every collective reaches the link's efficiency, as before this key existed (format
    # version 1 profiles without it keep their meaning). Calibration on gloo measures it.
    "all_to_all": 1.0, "reduce_scatter": 1.0, "all_reduce": 1.0,
})


#: Inference-mode coefficients a profile may give under ``coefficients.inference`` (format
#: version 1, optional): FBGEMM's inference kernel (``IntNBitTableBatchedEmbeddingBagsCodegen``)
#: is another kernel than the training TBE, so its efficiency and overheads are its own; and
#: int8/int4 rows are dequantised (``q * scale + bias``) per value looked up. Each key missing
#: falls back to the training coefficient of the same name (``dequant_ns_per_value``: 0), so
#: profiles without the section price inference as before.
INFERENCE_KEYS: tuple[str, ...] = ("lookup_bandwidth_efficiency", "kernel_overhead_us",
                                   "per_table_overhead_us", "dequant_ns_per_value")


def _inference(given: Mapping[str, Any]) -> Mapping[str, float]:
    out = {}
    for k, v in given.items():
        if k not in INFERENCE_KEYS:
            raise SpecError(f"inference: unknown coefficient {k!r}; expected one of "
                            f"{', '.join(INFERENCE_KEYS)}")
        eff = k.endswith("efficiency")
        ok = isinstance(v, (int, float)) and (0.0 < v <= 1.0 if eff else v >= 0.0)
        if not ok:
            raise SpecError(f"inference.{k}={v!r}: must be {'in (0, 1]' if eff else '>= 0'}")
        out[k] = float(v)
    return MappingProxyType(dict(sorted(out.items())))


def _keyed(name: str, given: Mapping[str, Any], defaults: Mapping[str, float],
           keys: tuple[str, ...], what: str, efficiency: bool) -> Mapping[str, float]:
    """``defaults`` overridden by ``given``, each key one of ``keys`` and each value in (0, 1]
    (an efficiency) or >= 0 (a latency); raises SpecError naming the key and the value."""
    out = dict(defaults)
    for k, v in given.items():
        if k not in keys:
            raise SpecError(f"{name}: unknown {what} {k!r}; expected one of {', '.join(keys)}")
        ok = isinstance(v, (int, float)) and (0.0 < v <= 1.0 if efficiency else v >= 0.0)
        if not ok:
            raise SpecError(f"{name}.{k}={v!r}: must be {'in (0, 1]' if efficiency else '>= 0'}")
        out[k] = float(v)
    return MappingProxyType(dict(sorted(out.items())))


@dataclass(frozen=True, kw_only=True, slots=True)
class Coefficients:
    """The cost model's tunable numbers (dimensionless efficiencies and microseconds).

    Attributes:
        lookup_bandwidth_efficiency: achieved / nominal device memory bandwidth, forward lookups.
        backward_bandwidth_efficiency: same, for backward plus the fused optimizer update.
        kernel_overhead_us: fixed cost of one batched lookup kernel per stage.
        per_table_overhead_us: extra fixed cost per shard inside a batched kernel, per stage.
        ddr_bandwidth_efficiency: achieved / nominal host DRAM bandwidth (``ddr`` placements).
        pcie_bandwidth_efficiency: achieved / nominal PCIe bandwidth (UVM misses).
        collective_bandwidth_efficiency: per link type (``LinkType``/``NetworkType`` value).
        collective_latency_us: per-call software overhead of each collective (``Collective``
            value), on top of the algorithm's latency (``estimators.comm``).
        all_to_all_peer_concurrency: peers an all-to-all exchanges with at once; its latency
            is ``peers / this`` per-peer steps.
        collective_kind_efficiency: per collective kind (``Collective`` value; all-gather uses
            ``reduce_scatter``), a factor in (0, 1] on the link efficiency: a collective of
            kind ``c`` over a link of type ``l`` runs at nominal x
            ``collective_bandwidth_efficiency[l] x collective_kind_efficiency[c]``. Default 1.
        pipeline_overlap: the fraction of the shorter of (next batch's input dist, the rest of
            the step) that the pipelined trainer hides (``StepModel.overlap``); 1 = full
            overlap, fitted by ``shardplan calibrate --plans`` from pipelined step times.
        inference: inference-mode coefficients (:data:`INFERENCE_KEYS`), each replacing the
            training one of its name in inference plans; empty: inference uses the training
            coefficients and no dequantisation time (``for_inference``).
    """

    lookup_bandwidth_efficiency: float = DEFAULT_LOOKUP_EFFICIENCY
    backward_bandwidth_efficiency: float = DEFAULT_BACKWARD_EFFICIENCY
    kernel_overhead_us: float = DEFAULT_KERNEL_OVERHEAD_US
    per_table_overhead_us: float = DEFAULT_PER_TABLE_OVERHEAD_US
    ddr_bandwidth_efficiency: float = DEFAULT_DDR_EFFICIENCY
    pcie_bandwidth_efficiency: float = DEFAULT_PCIE_EFFICIENCY
    all_to_all_peer_concurrency: float = DEFAULT_A2A_PEER_CONCURRENCY
    pipeline_overlap: float = DEFAULT_PIPELINE_OVERLAP
    collective_bandwidth_efficiency: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_COLLECTIVE_EFFICIENCY))
    collective_latency_us: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_COLLECTIVE_LATENCY_US))
    collective_kind_efficiency: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_COLLECTIVE_KIND_EFFICIENCY))
    inference: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inference", _inference(self.inference))
        for name in _EFFICIENCIES:
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 < v <= 1.0):
                raise SpecError(f"{name}={v!r}: must be in (0, 1]")
        for name in ("kernel_overhead_us", "per_table_overhead_us"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v >= 0.0):
                raise SpecError(f"{name}={v!r}: must be >= 0")
        v = self.all_to_all_peer_concurrency
        if not (isinstance(v, (int, float)) and v >= 1.0):
            raise SpecError(f"all_to_all_peer_concurrency={v!r}: must be >= 1")
        v = self.pipeline_overlap
        if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
            raise SpecError(f"pipeline_overlap={v!r}: must be in [0, 1]")
        collectives = tuple(c.value for c in Collective)
        for name, defaults, keys, what, efficiency in (
            ("collective_bandwidth_efficiency", DEFAULT_COLLECTIVE_EFFICIENCY, tuple(LINK_TYPES),
             "link type", True),
            ("collective_latency_us", DEFAULT_COLLECTIVE_LATENCY_US, collectives, "collective",
             False),
            ("collective_kind_efficiency", DEFAULT_COLLECTIVE_KIND_EFFICIENCY, collectives,
             "collective", True),
        ):
            object.__setattr__(self, name, _keyed(name, getattr(self, name), defaults, keys, what,
                                                  efficiency))

    def for_inference(self) -> Coefficients:
        """The coefficients inference plans are priced with: the ``inference`` values in place
        of the training ones of the same names (the section itself kept)."""
        over = {k: v for k, v in self.inference.items() if k != "dequant_ns_per_value"}
        return replace(self, **over) if over else self

    @property
    def dequant_s_per_value(self) -> float:
        """Seconds to dequantise one int8/int4 value looked up (inference; 0 if not given)."""
        return self.inference.get("dequant_ns_per_value", 0.0) * 1e-9

    def link_efficiency(self, link_type: str) -> float:
        return self.collective_bandwidth_efficiency[str(link_type)]

    def latency_s(self, collective: Collective) -> float:
        return self.collective_latency_us[collective.value] * 1e-6

    def kind_efficiency(self, collective: Collective) -> float:
        return self.collective_kind_efficiency[collective.value]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: float(getattr(self, k)) for k in _SCALARS}
        out["collective_bandwidth_efficiency"] = dict(self.collective_bandwidth_efficiency)
        out["collective_latency_us"] = dict(self.collective_latency_us)
        out["collective_kind_efficiency"] = dict(self.collective_kind_efficiency)
        if self.inference:  # only when given: profiles without it describe as before
            out["inference"] = dict(self.inference)
        return out


_EFFICIENCIES = ("lookup_bandwidth_efficiency", "backward_bandwidth_efficiency",
                 "ddr_bandwidth_efficiency", "pcie_bandwidth_efficiency")
_SCALARS = ("lookup_bandwidth_efficiency", "backward_bandwidth_efficiency", "kernel_overhead_us",
            "per_table_overhead_us", "ddr_bandwidth_efficiency", "pcie_bandwidth_efficiency",
            "all_to_all_peer_concurrency", "pipeline_overlap")

DEFAULT_COEFFICIENTS = Coefficients()


@dataclass(frozen=True, kw_only=True, slots=True)
class ProfileProvenance:
    """Where a profile's numbers come from."""

    kind: ProvenanceKind
    date: str = ""
    hardware: str = ""
    command: str = ""
    notes: str = ""

    def as_dict(self) -> dict[str, str]:
        out = {"kind": self.kind.value, "date": self.date, "hardware": self.hardware,
               "command": self.command}
        if self.notes:
            out["notes"] = self.notes
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceProfile:
    """Coefficients for one device model, with their provenance.

    Attributes:
        name: the file stem (``h100-sxm``), or ``defaults`` for the built-in coefficients.
        device_model: the ``DeviceModel.model`` this profile applies to.
        provenance: measured or datasheet, when, on what, by which command.
        coefficients: the numbers.
        source: the file it was read from ("" if built in code).
    """

    name: str
    device_model: str
    provenance: ProfileProvenance
    coefficients: Coefficients = DEFAULT_COEFFICIENTS
    source: str = ""

    def describe(self) -> dict[str, Any]:
        """What a plan records about this profile."""
        return {"name": self.name, "device_model": self.device_model,
                "provenance": self.provenance.as_dict(), "source": Path(self.source).name,
                "coefficients": self.coefficients.as_dict()}


def default_profile(device_model: str) -> DeviceProfile:
    """The built-in coefficients for a device model without a bundled profile."""
    return DeviceProfile(name="defaults", device_model=device_model,
                         provenance=ProfileProvenance(
                             kind=ProvenanceKind.DATASHEET,
                             notes="built-in defaults of shardplan.estimators.profiles "
                                   "(assumptions; no profile for this device model)"))


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def profile_from_dict(value: Any, source: str = "<profile>",
                      lines: dict[str, int] | None = None) -> DeviceProfile:
    """A profile from its parsed YAML. Raises SpecError naming ``source`` and the key."""
    ctx = Ctx(source, lines or {})
    r = Reader(value, "", ctx, "profile")
    version = r.int("format_version")
    if version != FORMAT_VERSION:
        raise ctx.fail("format_version", f"unsupported format_version {version}; this shardplan "
                                         f"reads version {FORMAT_VERSION}")
    name = r.str("name")
    device_model = r.str("device_model")
    pr = Reader(r.raw("provenance"), "provenance", ctx, "profile provenance")
    prov = ProfileProvenance(
        kind=pr.enum("kind", ProvenanceKind),
        date=str(pr.raw("date", "")), hardware=str(pr.raw("hardware", "")),
        command=str(pr.raw("command", "")), notes=str(pr.raw("notes", "")))
    pr.done()
    cr = Reader(r.raw("coefficients", {}), "coefficients", ctx, "profile coefficients")
    kwargs: dict[str, Any] = {}
    for k in _SCALARS:
        if cr.has(k):
            kwargs[k] = cr.num(k)
    for k, allowed in (("collective_bandwidth_efficiency", LINK_TYPES),
                       ("collective_latency_us", tuple(c.value for c in Collective)),
                       ("collective_kind_efficiency", tuple(c.value for c in Collective))):
        if cr.has(k):
            sub = Reader(cr.raw(k), f"coefficients.{k}", ctx, k)
            vals = {}
            for kk in allowed:
                if sub.has(kk):
                    vals[kk] = sub.num(kk)
            sub.done()
            kwargs[k] = vals
    if cr.has("inference"):
        sub = Reader(cr.raw("inference"), "coefficients.inference", ctx, "inference coefficients")
        kwargs["inference"] = {k: sub.num(k) for k in INFERENCE_KEYS if sub.has(k)}
        sub.done()
    cr.done()
    r.done()
    try:
        coeffs = Coefficients(**kwargs)
    except SpecError as exc:
        raise ctx.fail("coefficients", exc.message) from None
    return DeviceProfile(name=name, device_model=device_model, provenance=prov,
                         coefficients=coeffs, source=source)


def profile_to_dict(profile: DeviceProfile) -> dict[str, Any]:
    """The YAML form of a profile (inverse of :func:`profile_from_dict`)."""
    return {"format_version": FORMAT_VERSION, "name": profile.name,
            "device_model": profile.device_model, "provenance": profile.provenance.as_dict(),
            "coefficients": profile.coefficients.as_dict()}


def load_profile(path: str | Path) -> DeviceProfile:
    """Read a profile YAML file. Raises SpecError (missing file, bad YAML, unknown key)."""
    p = Path(path)
    text = read_text(p, "profile")
    value, lines = compose_yaml(text, str(p))
    if value is None:
        raise SpecError("the profile file is empty", source=str(p))
    return profile_from_dict(value, str(p), lines)


def save_profile(profile: DeviceProfile, path: str | Path) -> Path:
    """Write a profile as YAML (deterministic key order). Returns the path."""
    p = Path(path)
    p.write_text(yaml.safe_dump(profile_to_dict(profile), sort_keys=False), encoding="utf-8")
    return p


def bundled_profiles() -> dict[str, DeviceProfile]:
    """The profiles shipped in ``estimators/profiles/``, keyed by name (file stem)."""
    return dict(_bundled())


@lru_cache(maxsize=1)
def _bundled() -> tuple[tuple[str, DeviceProfile], ...]:
    root = resources.files(PROFILES_PACKAGE).joinpath("profiles")
    out = []
    for f in sorted(root.iterdir(), key=lambda f: f.name):
        if f.name.endswith(".yaml"):
            prof = load_profile(Path(str(f)))
            out.append((prof.name, prof))
    return tuple(out)


def profile_for_device(device_model: str,
                       profiles: Mapping[str, DeviceProfile] | None = None) -> DeviceProfile:
    """The profile for ``device_model``: a bundled datasheet one, preferring measured ones, else
    :func:`default_profile` with a ``ShardplanWarning`` naming it. Ties break by profile name,
    so the choice is deterministic."""
    known = profiles if profiles is not None else bundled_profiles()
    cands = [p for p in known.values() if p.device_model == device_model]
    if not cands:
        models = ", ".join(sorted({p.device_model for p in known.values()}))
        warnings.warn(f"no calibration profile for device model {device_model!r}; using the "
                      f"built-in 'defaults' profile (assumed coefficients). Profiles exist for "
                      f"{models}; use one of those model names, or pass --profile PATH "
                      "(`shardplan calibrate` writes one)", ShardplanWarning, stacklevel=2)
        return default_profile(device_model)
    cands.sort(key=lambda p: (p.provenance.kind is not ProvenanceKind.MEASURED, p.name))
    return cands[0]


def with_coefficients(profile: DeviceProfile, **changes: Any) -> DeviceProfile:
    """A copy of ``profile`` with some coefficients replaced (for what-if studies and tests)."""
    return replace(profile, coefficients=replace(profile.coefficients, **changes))
