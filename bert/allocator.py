"""Host memory allocator settings that keep XLA:CPU's per-step scratch memory mapped.

Every execution of a compiled step asks the host allocator for one scratch buffer holding all of
the step's temporaries (1.3 GB for a BERT-base step of 8 × 128 tokens) and frees it at the end.
XLA's pool threads allocate from glibc's per-thread arenas, which serve a request that large
with a fresh `mmap` and return it with `munmap`; so every step the kernel maps, zero-fills and
unmaps the whole buffer again: ~330k page faults per BERT-base step, which made the step
1.09-1.24x slower on a 2-core machine (docs/PERFORMANCE.md). Keeping all allocations in one
arena, served from the heap and never trimmed, maps the buffer once and reuses it for every
later step.

The command-line entry points call `configure()` once the config is read and before anything
starts JAX's backend (whose thread pools take their arenas when they start): it applies the
settings in the running interpreter with glibc's `mallopt` and logs what is in effect. Where the
settings come from, first match wins: config.host_allocator ("tuned" or "system"; "auto" defers),
the BERT_JAX_ALLOCATOR environment variable (the same values), else "tuned" for CPU runs on
glibc Linux and "system" elsewhere (accelerator hosts keep their allocator: the step's scratch
memory lives on the device there). Other C libraries have no such settings. The price is
memory: freed memory stays with the process, so its resident set is its high-water mark plus
fragmentation (4.6 instead of 3.5 GiB for the BERT-base step above).

The same settings as a GLIBC_TUNABLES environment (`tuned_environment`) serve processes started
afresh, such as bert.bench's workers.

With the tuned settings, CPU computations also run inline in the thread that calls them
(`keep_dispatch_inline`) instead of being dispatched asynchronously. Asynchronously, a step's
scratch buffer could be requested while the previous step's was still being released (XLA frees it
after signalling the step's results ready), so both lived at once and the never-trimmed heap kept
the second for good: the resident set grew by a whole scratch buffer at random steps (2 of 3
processes of a 4-layer BERT-base step at 32 x 128 grew, twice each, 2.7 -> 5.3 GiB, those steps
1.5x slower), which also made benchmark rows vary. Inline, a step returns its scratch before the
call returns: 0 of 3 grew, and the steps took as long (3.37 s against 3.33 s). The data pipeline
keeps running in its own threads and processes meanwhile.
"""
from __future__ import annotations

import ctypes
import glob
import logging
import os
import platform
import sys
from collections.abc import Mapping

OPT_OUT = "BERT_JAX_ALLOCATOR"  # "system": leave the allocator as it is; "tuned": apply it
SETTINGS = ("auto", "tuned", "system")

# One arena (the heap), no mmap-ed chunks, never give freed memory back to the kernel.
TUNABLES = {
    "glibc.malloc.arena_max": "1",
    "glibc.malloc.mmap_max": "0",
    "glibc.malloc.trim_threshold": str(2**62),
}


def _entries(environ: Mapping[str, str]) -> dict[str, str]:
    """GLIBC_TUNABLES as {name: "name=value"}, in order."""
    entries = environ.get("GLIBC_TUNABLES", "").split(":")
    return {entry.split("=", 1)[0]: entry for entry in entries if entry}


def _with_entries(environ: Mapping[str, str], entries: dict[str, str]) -> dict[str, str]:
    result = {k: v for k, v in environ.items() if k != "GLIBC_TUNABLES"}
    if entries:
        result["GLIBC_TUNABLES"] = ":".join(entries.values())
    return result


def tuned_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with TUNABLES added to GLIBC_TUNABLES; settings already present are kept."""
    user = _entries(environ)
    ours = {name: f"{name}={value}" for name, value in TUNABLES.items() if name not in user}
    return _with_entries(environ, {**user, **ours})


def system_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without TUNABLES and opted out, so that commands keep the system's allocator."""
    kept = {name: entry for name, entry in _entries(environ).items() if name not in TUNABLES}
    return {**_with_entries(environ, kept), OPT_OUT: "system"}


def is_tuned(environ: Mapping[str, str]) -> bool:
    return set(TUNABLES) <= set(_entries(environ))


def applies(environ: Mapping[str, str]) -> bool:
    """True for CPU runs on glibc Linux that have not opted out."""
    return environ.get(OPT_OUT, "auto") != "system" and _is_glibc_linux() and _runs_on_cpu(environ)


def wanted(environ: Mapping[str, str]) -> bool:
    """True where the settings apply (`applies`) and are not yet in effect."""
    return applies(environ) and not is_tuned(environ)


def _runs_on_cpu(environ: Mapping[str, str]) -> bool:
    """JAX_PLATFORMS=cpu, or no GPU or TPU device node: accelerator hosts keep their allocator
    (the step's scratch memory lives on the device there, and a never-trimmed heap would hold
    on to the host memory of checkpoint copies)."""
    if environ.get("JAX_PLATFORMS"):
        return environ["JAX_PLATFORMS"] == "cpu"
    return not any(glob.glob(pattern) for pattern in ("/dev/nvidia[0-9]*", "/dev/accel[0-9]*",
                                                      "/dev/vfio/[0-9]*"))


# mallopt(3) parameters with TUNABLES' values; a trim threshold of -1 disables trimming.
_MALLOPT = {"M_ARENA_MAX": (-8, 1), "M_MMAP_MAX": (-4, 0), "M_TRIM_THRESHOLD": (-1, -1)}


def resolve(setting: str = "auto", environ: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """("tuned" | "system", why) for `setting` (config.host_allocator) and the environment."""
    if setting not in SETTINGS:
        raise ValueError(f"config.host_allocator must be one of {', '.join(SETTINGS)}, "
                         f"got {setting!r}")
    from_environment = environ.get(OPT_OUT, "auto")
    if from_environment not in SETTINGS:
        raise ValueError(f"{OPT_OUT} must be one of {', '.join(SETTINGS)}, got {from_environment!r}")
    if setting != "auto":
        return setting, "config.host_allocator"
    if from_environment != "auto":
        return from_environment, OPT_OUT
    if applies(environ):
        return "tuned", "a CPU run on glibc"
    return "system", "not a CPU run on glibc" if _is_glibc_linux() else "not glibc"


def configure(setting: str = "auto", environ: Mapping[str, str] = os.environ) -> str:
    """Applies the host allocator settings `resolve` picks and logs them; returns "tuned" or
    "system". Call it before JAX starts its backend: threads that exist keep their arenas."""
    choice, why = resolve(setting, environ)
    if choice == "tuned" and not _is_glibc_linux():
        logging.warning("host allocator: %s asks for tuned settings, which only glibc has; "
                        "keeping the system's", why)
        return "system"
    if choice == "system":
        logging.info("host allocator: the system's defaults (%s; config.host_allocator or %s "
                     "change this)", why, OPT_OUT)
        return "system"
    keep_dispatch_inline()
    if is_tuned(environ):
        logging.info("host allocator: tuned by GLIBC_TUNABLES=%s; CPU computations run inline",
                     environ["GLIBC_TUNABLES"])
        return "tuned"
    apply_tuned_settings()
    logging.info("host allocator: tuned (%s): one arena, no mmap-ed chunks, never trimmed "
                 "(mallopt %s), CPU computations run inline; config.host_allocator=system or "
                 "%s=system keeps the system's",
                 why, " ".join(f"{name}={value}" for name, (_, value) in _MALLOPT.items()), OPT_OUT)
    return "tuned"


def keep_dispatch_inline() -> None:
    """Runs CPU computations in the calling thread, so that each step releases its scratch
    buffer before the next asks for one (see the module docstring). Call it before JAX starts
    its CPU backend; computations spread over several devices are dispatched as before."""
    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)


def apply_tuned_settings() -> None:
    """TUNABLES, set in this process through glibc's mallopt."""
    libc = ctypes.CDLL(None)
    for name, (parameter, value) in _MALLOPT.items():
        if libc.mallopt(parameter, value) != 1:
            raise OSError(f"glibc mallopt({name}, {value}) failed")


def _is_glibc_linux() -> bool:
    return sys.platform == "linux" and platform.libc_ver()[0] == "glibc"


def reexec_with_tuned_allocator() -> None:
    """Restarts this command with the tuned allocator; returns when nothing is to be done.

    Call it before anything else in a command's `__main__` block: the process image is
    replaced, so earlier work (and unflushed output) would be lost.
    """
    if not wanted(os.environ):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    # orig_argv is the interpreter's own command line (options, -m module, arguments).
    os.execve(sys.executable, sys.orig_argv, tuned_environment(os.environ))
