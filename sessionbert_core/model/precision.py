"""Numeric precision: bf16 only where the hardware runs it natively, fp32 otherwise.

Some CPUs multiply bf16 matrices in hardware (AVX-512 BF16, AMX); others emulate it, at about 1% of
their fp32 speed (an AVX2-only AMD EPYC: 0.7 GFLOP/s against 45-112), which made bf16 autocast
training 60x slower there. So `auto` decides by what the hardware has and what PyTorch may use of it
(`cpu_bf16_support`); a short timed product in each precision (a fraction of a second, once per
process) can only veto bf16 where it runs far below fp32, so a busy machine cannot flip the choice.
On CUDA it takes bf16 where the device supports it. Every path that runs a model resolves its
precision here.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch

from sessionbert_core.config import compute_from_env, onednn_isa_cap

PRECISIONS = ("auto", "bf16", "fp32")
PROBE_SIZE = 256  # the probe's square product: long enough to time, short even where bf16 is emulated
PROBE_SECONDS = 0.05  # per precision
# native bf16 runs 1.5-5x fp32; emulated, 1-3% of it: below half of fp32 in the probe, bf16 is not native after all
BF16_VETO_BELOW = 0.5


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
    """Whether `device` multiplies bf16 in hardware for PyTorch: the driver's answer on CUDA; on CPU,
    `cpu_bf16_support`'s."""
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cpu_bf16_support()[0]


def cpu_bf16_support() -> tuple[bool, str]:
    """Whether this CPU runs bf16 matrix products natively for PyTorch, and why, from what the hardware has
    and what PyTorch may use of it (never from a timing, which a busy machine skews): the instructions (AVX-512
    BF16 or AMX tiles, read by cpuinfo), ATen's dispatch level (`ATEN_CPU_CAPABILITY` caps it) and oneDNN's
    (`ONEDNN_MAX_CPU_ISA` caps it). `ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2` turns a CPU with bf16
    into one without: the stand-in for an AVX2-only laptop or server."""
    amx, avx512_bf16 = torch.cpu._is_amx_tile_supported(), torch.cpu._is_avx512_bf16_supported()
    if not (amx or avx512_bf16):
        return False, "this CPU has no bf16 instructions (AVX-512 BF16 or AMX): bf16 would be emulated"
    instructions = "AMX" if amx else "AVX-512 BF16"
    capability = torch.backends.cpu.get_cpu_capability()
    if not capability.startswith("AVX512"):
        return False, f"PyTorch is held to {capability} (ATEN_CPU_CAPABILITY): the CPU's {instructions} is not used"
    cap = onednn_isa_cap()
    if cap not in ONEDNN_BF16_ISAS:
        return False, f"oneDNN is held to {cap} (ONEDNN_MAX_CPU_ISA): the CPU's {instructions} is not used"
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False, "oneDNN does not run bf16 on this CPU"
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False, "this torch build has no oneDNN"
    return True, f"bf16 native ({instructions})"


# oneDNN's ISA levels (ONEDNN_MAX_CPU_ISA) at which bf16 products still run in hardware
ONEDNN_BF16_ISAS = ("ALL", "DEFAULT", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX",
                    "AVX512_CORE_AMX_FP16", "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16",
                    "AVX10_2_512", "AVX10_2_512_AMX_2")


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
    native, why = cpu_bf16_support()
    if not native:
        return Precision("fp32", device, requested, why, native)
    # the probe is a second check only: it vetoes bf16 where it runs far below fp32 (emulated after all), a
    # margin that load on the machine (both precisions slowed alike) cannot reach
    bf16, fp32 = matmul_gflops(torch.bfloat16), matmul_gflops(torch.float32)
    emulated = bf16 < BF16_VETO_BELOW * fp32
    reason = (f"{why}, but only {bf16 / fp32:.2f}x fp32 in the probe: emulated" if emulated
              else f"{why}; {bf16 / fp32:.1f}x fp32 in the probe")
    return Precision("fp32" if emulated else "bf16", device, requested, reason, native, round(bf16, 1),
                     round(fp32, 1))


def use_bf16(bf16: bool | None, device: str | torch.device) -> bool:
    """A caller's explicit choice, or the resolved precision of `device` when it made none."""
    if bf16 is not None:
        return bf16
    return resolve_precision(torch.device(device).type).bf16
