"""Host memory allocator settings that keep XLA:CPU's per-step scratch memory mapped.

Every execution of a compiled step asks the host allocator for one scratch buffer holding all of
the step's temporaries (1.3 GB for a BERT-base step of 8 × 128 tokens) and frees it at the end.
XLA's pool threads allocate from glibc's per-thread arenas, which serve a request that large
with a fresh `mmap` and return it with `munmap`; so every step the kernel maps, zero-fills and
unmaps the whole buffer again: ~330k page faults per BERT-base step, which made the step
1.09-1.24x slower on a 2-core machine (docs/PERFORMANCE.md). Keeping all allocations in one
arena, served from the heap and never trimmed, maps the buffer once and reuses it for every
later step.

glibc reads these settings only at process start, so the command-line entry points call
`reexec_with_tuned_allocator()` first thing: the process restarts itself once with
`GLIBC_TUNABLES` extended. Only CPU runs do this; `BERT_JAX_ALLOCATOR=system` keeps the
system's defaults everywhere; other C libraries ignore the variable. The price is memory: freed
memory stays with the process, so its resident set is its high-water mark plus fragmentation
(4.6 instead of 3.5 GiB for the BERT-base step above).
"""
from __future__ import annotations

import glob
import os
import platform
import sys
from collections.abc import Mapping

OPT_OUT = "BERT_JAX_ALLOCATOR"  # "system": leave the allocator as it is

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
    return (environ.get(OPT_OUT, "tuned") != "system" and sys.platform == "linux"
            and platform.libc_ver()[0] == "glibc" and _runs_on_cpu(environ))


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
