"""Lookup-kernel calibration on one GPU with plain torch (no FBGEMM needed); writes a profile.

Runs in under 3 minutes on an H100/H200: forward and backward (+ row-wise Adagrad update) of
``torch.nn.functional.embedding_bag`` over a grid of rows, dims, pooling factors, batches,
dtypes and table counts; fits the cost model's lookup coefficients; writes

    $OUT/<name>.yaml           the profile (estimators/profiles schema, kind: measured)
    $OUT/measurements.json     every point, so the fit can be redone later (--refit)

Needs only torch (+ CUDA): numpy and shardplan need not be installed on the GPU machine.
The fit has the cost model's form (see ``shardplan.executor.calibrate``) with its byte counts
restated here (``estimators/compute.py``, ``estimators/memory.py``): forward reads
ids x (row + 8 B id) and writes samples x cols x 4 B; backward reads samples x cols x 4 B of
gradient, read-modify-writes each distinct row (+ 4 B row-wise state) twice, and sorts ids through
2 x ids x 24 B of workspace. If those formulas change, refit from measurements.json.

    python bench/gpu_calibrate.py --out "$OUT"                 # on the GPU machine (64 points)
    python bench/gpu_calibrate.py --wide --out "$OUT"          # 288 points, ~60 s on an H200
    python bench/gpu_calibrate.py --tiny --device cpu --out /tmp/x   # CPU smoke test
    python bench/gpu_calibrate.py --refit /path/measurements.json --out DIR   # redo the fit

The torch path does the backward and the update as separate kernels (FBGEMM fuses them), so
its backward efficiency is a lower bound for FBGEMM's fused kernel; the profile notes say so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

# Nominal HBM bandwidth per device (bytes/s), from NVIDIA datasheets: H100 SXM5 80GB 3.35 TB/s,
# H200 SXM 141GB 4.8 TB/s, A100 SXM 80GB 2.039 TB/s, A100 SXM 40GB 1.555 TB/s, L4 300 GB/s.
# The cost model scales the topology's hbm_bandwidth, which the bundled topologies set to these.
DEVICES = {  # substring of torch.cuda.get_device_name -> (device_model, bytes/s)
    "H200": ("H200-SXM-141GB", 4.8e12),
    "H100": ("H100-SXM-80GB", 3.35e12),
    "A100-SXM4-80GB": ("A100-SXM-80GB", 2.039e12),
    "A100": ("A100-SXM-40GB", 1.555e12),
    "L4": ("L4-24GB", 300e9),
}
CPU_NOMINAL = ("CPU", 10e9)  # topologies/cpu-*.yaml placeholder: 10 GB/s per process

ID_BYTES = 8  # estimators/memory.py: ids are int64 in TBE
OUT_BYTES = 4  # fp32 pooled outputs and gradients
STATE_BYTES_PER_ROW = 4  # row-wise Adagrad: one fp32 per row
WORKSPACE_BYTES_PER_ID = 24  # estimators/memory.py BACKWARD_WORKSPACE_BYTES_PER_ID

GPU_GRID = dict(rows=(100_000, 4_000_000), dims=(64, 128), pfs=(1.0, 20.0), batches=(2048, 32768),
                dtypes=("fp32", "fp16"), tables=(1, 4), reps=10, warmup=3)
# The grid the committed H200 profile was measured on (288 points, about 60 s on an H200).
WIDE_GRID = dict(rows=(100_000, 2_000_000, 10_000_000), dims=(32, 64, 128, 256),
                 pfs=(1.0, 10.0, 50.0), batches=(4096, 65536), dtypes=("fp32", "fp16"),
                 tables=(1, 8), reps=8, warmup=2)
TINY_GRID = dict(rows=(200,), dims=(8,), pfs=(2.0,), batches=(32, 128), dtypes=("fp32",),
                 tables=(1, 2), reps=3, warmup=1)


def measure(grid: dict, device: str, seed: int = 0, budget_s: float = 150.0) -> list[dict]:
    import torch
    import torch.nn.functional as F

    dev = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    lr, eps = 0.05, 1e-8
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    t_start = time.perf_counter()
    out = []
    for rows in grid["rows"]:
        for dim in grid["dims"]:
            for dtn in grid["dtypes"]:
                dtype = {"fp32": torch.float32, "fp16": torch.float16}[dtn]
                for T in grid["tables"]:
                    ws = [(torch.rand(rows, dim, device=dev) * 0.2 - 0.1).to(dtype).requires_grad_(True)
                          for _ in range(T)]
                    st = [torch.zeros(rows, device=dev) for _ in range(T)]
                    for pf in grid["pfs"]:
                        for B in grid["batches"]:
                            if time.perf_counter() - t_start > budget_s:
                                print(f"time budget {budget_s:.0f}s reached; fitting what was measured",
                                      file=sys.stderr)
                                return out
                            lens = [torch.poisson(torch.full((B,), pf), generator=gen).long() for _ in range(T)]
                            ids = [torch.randint(0, rows, (int(l.sum()),), generator=gen).to(dev) for l in lens]
                            offs = [torch.cat([torch.zeros(1, dtype=torch.long), l.cumsum(0)[:-1]]).to(dev)
                                    for l in lens]
                            grad = torch.randn(B, dim, generator=gen).to(dev).to(dtype)
                            f, b = [], []
                            for i in range(grid["warmup"] + grid["reps"]):
                                sync()
                                t0 = time.perf_counter()
                                outs = [F.embedding_bag(ids[t], ws[t], offs[t], mode="sum", sparse=True)
                                        for t in range(T)]
                                sync()
                                t1 = time.perf_counter()
                                for t in range(T):
                                    outs[t].backward(grad)
                                    with torch.no_grad():
                                        g = ws[t].grad.coalesce()
                                        ws[t].grad = None
                                        r, v = g.indices()[0], g.values().float()
                                        st[t].index_add_(0, r, v.pow(2).mean(1))
                                        step = v / (st[t].index_select(0, r).sqrt() + eps).unsqueeze(1)
                                        ws[t].index_add_(0, r, (-lr * step).to(dtype))
                                sync()
                                t2 = time.perf_counter()
                                if i >= grid["warmup"]:
                                    f.append((t1 - t0) * 1e3)
                                    b.append((t2 - t1) * 1e3)
                            out.append(dict(rows=rows, dim=dim, pooling_factor=pf, batch=B, dtype=dtn,
                                            tables=T, ids=sum(int(x.numel()) for x in ids),
                                            fwd_ms=statistics.median(f), bwd_ms=statistics.median(b)))
                    del ws, st
                    if dev.type == "cuda":
                        torch.cuda.empty_cache()
    return out


def _ideal_ms(p: dict, bw: float) -> tuple[float, float]:
    """(forward, backward) ms at nominal bandwidth, the cost model's byte counts (see module doc)."""
    row = p["dim"] * (4 if p["dtype"] == "fp32" else 2)
    ids = p["ids"]  # measured ids (Poisson around batch x pooling x tables)
    samples = p["batch"] * p["tables"]
    fwd = ids * (row + ID_BYTES) + samples * p["dim"] * OUT_BYTES
    # each distinct row is updated once (estimators/compute.py distinct_rows: uniform ids)
    per_table = ids / p["tables"]
    touched = p["tables"] * p["rows"] * -math.expm1(-per_table / p["rows"])
    bwd = (2 * touched * (row + STATE_BYTES_PER_ROW) + samples * p["dim"] * OUT_BYTES
           + 2 * ids * WORKSPACE_BYTES_PER_ID)
    return fwd / bw * 1e3, bwd / bw * 1e3


def fit(points: list[dict], bw: float) -> tuple[dict, dict]:
    """Least squares on relative error (torch.linalg.lstsq: no numpy needed)."""
    import torch

    rows, y = [], []
    for p in points:
        fi, bi = _ideal_ms(p, bw)
        rows += [[1.0, p["tables"], fi, 0.0], [1.0, p["tables"], 0.0, bi]]
        y += [p["fwd_ms"], p["bwd_ms"]]
    a = torch.tensor(rows, dtype=torch.float64)
    yv = torch.tensor(y, dtype=torch.float64)
    w = 1.0 / yv.clamp_min(1e-9)
    x = torch.linalg.lstsq(a * w[:, None], (yv * w)[:, None]).solution[:, 0]
    k, pt, cf, cb = (float(v) for v in x)
    notes = []

    def eff(slope: float, name: str) -> float:
        if slope <= 1.0:
            notes.append(f"{name} fitted above 1, clipped to 1")
            return 1.0
        return float(f"{1.0 / slope:.4g}")

    co = {"lookup_bandwidth_efficiency": eff(cf, "lookup_bandwidth_efficiency"),
          "backward_bandwidth_efficiency": eff(cb, "backward_bandwidth_efficiency"),
          "kernel_overhead_us": round(max(k, 0.0) * 1e3, 3),
          "per_table_overhead_us": round(max(pt, 0.0) * 1e3, 3)}
    pred = (co["kernel_overhead_us"] + co["per_table_overhead_us"] * a[:, 1]) * 1e-3 \
        + a[:, 2] / co["lookup_bandwidth_efficiency"] + a[:, 3] / co["backward_bandwidth_efficiency"]
    rel = ((pred - yv).abs() / yv).median()
    return co, {"median_rel_error": float(rel), "notes": notes, "points": len(points)}


def write(out_dir: Path, name: str, model: str, hardware: str, co: dict, rep: dict, cmd: str,
          bw: float) -> Path:
    notes = (f"torch embedding_bag lookups (no FBGEMM); backward = autograd + separate row-wise "
             f"Adagrad kernels, a lower bound for FBGEMM's fused backward; fit median rel. error "
             f"{rep['median_rel_error']:.1%} over {rep['points']} points; nominal HBM "
             f"{bw / 1e9:.0f} GB/s" + "".join(f"; {n}" for n in rep["notes"]))
    lines = [
        "# Measured by bench/gpu_calibrate.py (lookup kernels on one device, torch only).",
        "# Efficiencies: achieved / nominal HBM bandwidth; overheads in microseconds.",
        "format_version: 1",
        f"name: {name}",
        f"device_model: {model}",
        "provenance:",
        "  kind: measured",
        f"  date: \"{dt.date.today().isoformat()}\"",
        f"  hardware: {json.dumps(hardware)}",
        f"  command: {json.dumps(cmd)}",
        f"  notes: {json.dumps(notes)}",
        "coefficients:",
    ] + [f"  {k}: {v}" for k, v in co.items()]
    p = out_dir / f"{name}.yaml"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."), help="output folder ($OUT)")
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny grid (smoke test)")
    ap.add_argument("--wide", action="store_true", help="wider grid (288 points)")
    ap.add_argument("--name", default=None, help="profile name (default from the device)")
    ap.add_argument("--budget-s", type=float, default=150.0, help="stop measuring after this")
    ap.add_argument("--refit", default=None, help="fit measurements.json again, no measuring")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if a.refit:
        meta = json.loads(Path(a.refit).read_text())
        points, model, bw, hw = meta["points"], meta["device_model"], meta["nominal_bytes_per_s"], meta["hardware"]
    else:
        import torch

        device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda"):
            gname = torch.cuda.get_device_name(0)
            model, bw = next((v for k, v in DEVICES.items() if k in gname), (gname, 0.0))
            if not bw:
                print(f"unknown GPU {gname!r}: add its nominal HBM bandwidth to DEVICES", file=sys.stderr)
                return 1
            hw = f"{gname}, torch {torch.__version__}, CUDA {torch.version.cuda}, no FBGEMM"
        else:
            torch.set_num_threads(1)
            model, bw = CPU_NOMINAL
            hw = f"{os.cpu_count()}-core CPU, torch {torch.__version__}, 1 thread, no FBGEMM"
        grid = TINY_GRID if a.tiny else WIDE_GRID if a.wide else GPU_GRID
        points = measure(grid, device, budget_s=a.budget_s)
        (out / "measurements.json").write_text(json.dumps(
            {"device_model": model, "nominal_bytes_per_s": bw, "hardware": hw, "points": points},
            indent=1) + "\n")
    co, rep = fit(points, bw)
    name = a.name or model.lower() + "-torch"
    cmd = "python bench/gpu_calibrate.py" + (" --tiny" if a.tiny else " --wide" if a.wide else "")
    if a.refit:
        cmd += f" --refit {a.refit}"
    path = write(out, name, model, hw, co, rep, cmd, bw)
    print(f"{len(points)} points in {time.perf_counter() - t0:.1f}s; fit median error "
          f"{rep['median_rel_error']:.1%}")
    for k, v in co.items():
        print(f"  {k}: {v}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
