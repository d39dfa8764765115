"""How the benchmarks here measure: timed calls, peak memory, the encoder's FLOPs, the machine's
best matmul rate and what the machine is. Nothing here starts an accelerator runtime at import."""
from __future__ import annotations

import os
import resource
import time
from typing import Any, Callable, NamedTuple


class Timing(NamedTuple):
    seconds: list[float]  # wall time of each timed call
    result: Any  # what the last call returned
    page_faults: float  # minor page faults per timed call: memory mapped afresh (bert/allocator.py)


def time_calls(call: Callable[[], Any], calls: int, *, warmup: int = 0) -> Timing:
    """`warmup` untimed calls, then `calls` timed one by one."""
    for _ in range(warmup):
        call()
    seconds, result = [], None
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        start = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - start)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return Timing(seconds, result, faults / max(calls, 1))


def time_steps(step: Callable[[], None], steps: int, warmup: int) -> dict[str, Any]:
    """Compilation time (the first call compiles, or does its first-call setup), then `steps`
    step times after `warmup` steps, and the minor page faults per timed step."""
    compile_s = time_calls(step, 1).seconds[0]
    timed = time_calls(step, steps, warmup=warmup)
    return dict(compile_s=compile_s, step_times=timed.seconds,
                page_faults_per_step=timed.page_faults)


def jax_peak_memory() -> int | None:
    """Peak bytes of the first JAX device, where its runtime keeps count (not on the CPU)."""
    import jax

    stats = jax.devices()[0].memory_stats()
    return int(stats["peak_bytes_in_use"]) if stats else None


def encoder_matmuls(batch: int, seq: int, layers: int, hidden: int) -> int:
    """Multiply-adds of the encoder's dense layers and attention scores and context."""
    return batch * seq * (12 * layers * hidden**2 + 2 * layers * seq * hidden)


def measure_peak_flops(dtype: str) -> dict[str, float]:
    """Best square-matmul FLOP/s in `dtype` with JAX and, when installed, PyTorch."""
    import jax

    on_gpu = jax.default_backend() != "cpu"
    n = 8192 if on_gpu else 2048
    # Random operands: a GPU multiplies constant or zero matrices faster than real data (less
    # switching power, higher clocks), which would make the peak, and so MFU, flattering.
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    matmul = jax.jit(lambda x: x @ x)
    times = time_steps(lambda: matmul(a).block_until_ready(), 10, 2)["step_times"]
    rates = {"jax": 2 * n**3 / min(times)}
    try:
        import torch
    except ImportError:
        return rates
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn((n, n), generator=torch.Generator().manual_seed(0)).to(
        device=device, dtype=getattr(torch, dtype))

    def torch_matmul() -> None:
        (x @ x).sum().item()

    times = time_steps(torch_matmul, 10, 2)["step_times"]
    rates["torch"] = 2 * n**3 / min(times)
    return rates


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, vector ISA, package versions."""
    from importlib import metadata

    import jax

    cpu, isa = "", []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not cpu:
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not isa:
                    isa = sorted(set(line.split(":", 1)[1].split()) & {
                        "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    except OSError:
        pass
    versions = {}
    for package in ("jax", "jaxlib", "flax", "optax", "torch", "transformers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return dict(cpu=cpu, cores=os.cpu_count(), isa=isa, backend=jax.default_backend(),
                devices=[d.device_kind for d in jax.devices()], versions=versions)
