"""Numeric precision: bf16 only where the hardware runs it natively and faster than fp32, fp32 otherwise.

Some CPUs multiply bf16 matrices in hardware (AVX-512 BF16, AMX); others emulate it, at about 1% of
their fp32 speed (an AVX2-only AMD EPYC: 0.7 GFLOP/s against 45-112), which made bf16 autocast
training 60x slower there. So `auto` asks oneDNN whether bf16 is native and, when it is, times one
short matrix product in each precision (a fraction of a second, once per process); on CUDA it takes
bf16 where the device supports it. Every path that runs a model resolves its precision here.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch

from sessionbert_core.config import compute_from_env

PRECISIONS = ("auto", "bf16", "fp32")
PROBE_SIZE = 256  # the probe's square product: long enough to time, short even where bf16 is emulated
PROBE_SECONDS = 0.05  # per precision
# bf16 must beat fp32 by this factor to be chosen: autocast's casts cost something on every layer
BF16_MIN_SPEEDUP = 1.2


@dataclass(frozen=True)
class Precision:
    """The precision a device runs models in, and why."""

    name: str  # "bf16" or "fp32"
    device: str
    requested: str
    reason: str
    native_bf16: bool | None = None
    probe_bf16_gflops: float | None = None
    probe_fp32_gflops: float | None = None

    @property
    def bf16(self) -> bool:
        return self.name == "bf16"

    def metadata(self) -> dict[str, str | float | bool]:
        """Flat figures for asset metadata and MLflow params (absent ones left out)."""
        figures = {"precision": self.name, "precision_requested": self.requested, "precision_reason": self.reason,
                   "precision_native_bf16": self.native_bf16, "precision_probe_bf16_gflops": self.probe_bf16_gflops,
                   "precision_probe_fp32_gflops": self.probe_fp32_gflops}
        return {key: value for key, value in figures.items() if value is not None}


def native_bf16(device: str) -> bool:
    """Whether `device` multiplies bf16 in hardware: oneDNN's answer on CPU, the driver's on CUDA."""
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def matmul_gflops(dtype: torch.dtype, m: int = PROBE_SIZE, k: int = PROBE_SIZE, n: int = PROBE_SIZE,
                  seconds: float = PROBE_SECONDS) -> float:
    """GFLOP/s of an (m x k) @ (k x n) product on the CPU in `dtype`, over at least `seconds` (one warm-up
    first): the probe here, and the ceilings of `benchmarks/perf.py`."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b
    started, reps = time.perf_counter(), 0
    while reps == 0 or time.perf_counter() - started < seconds:
        a @ b
        reps += 1
    return 2 * m * k * n * reps / (time.perf_counter() - started) / 1e9


def resolve_precision(device: str | None = None, requested: str | None = None) -> Precision:
    """The precision to run in on `device` (default: SESSIONBERT_DEVICE's) for `requested` (default:
    SESSIONBERT_PRECISION, else auto); resolved once per process for each pair."""
    env = compute_from_env()
    device = resolve_device(device or env.device)
    requested = requested or env.precision
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    return _resolve(device, requested)


def resolve_device(device: str) -> str:
    """`auto` as CUDA when torch sees a CUDA device, else CPU; a clear error for anything else."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@functools.cache
def _resolve(device: str, requested: str) -> Precision:
    if requested != "auto":
        return Precision(requested, device, requested, f"{requested} asked for", native_bf16(device))
    native = native_bf16(device)
    if device == "cuda":
        return Precision("bf16" if native else "fp32", device, requested,
                         "the GPU supports bf16" if native else "the GPU has no bf16", native)
    if not native:
        return Precision("fp32", device, requested, "bf16 is not native on this CPU (emulated: far slower)", native)
    bf16, fp32 = matmul_gflops(torch.bfloat16), matmul_gflops(torch.float32)
    faster = bf16 >= BF16_MIN_SPEEDUP * fp32
    reason = (f"bf16 native and {bf16 / fp32:.1f}x fp32 in the probe" if faster
              else f"bf16 native but only {bf16 / fp32:.1f}x fp32 in the probe (below {BF16_MIN_SPEEDUP}x)")
    return Precision("bf16" if faster else "fp32", device, requested, reason, native, round(bf16, 1), round(fp32, 1))


def use_bf16(bf16: bool | None, device: str | torch.device) -> bool:
    """A caller's explicit choice, or the resolved precision of `device` when it made none."""
    if bf16 is not None:
        return bf16
    return resolve_precision(torch.device(device).type).bf16
