"""Joining the processes of one run into a single JAX system, before any device is touched.

Every process of a multi-host run executes the same command. Where the processes find each
other comes from, in this order:

1. flags: --coordinator_address=HOST:PORT --num_processes=N --process_id=I
   [--local_device_ids=0,1,...] (what launch/multiprocess.sh passes);
2. environment: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID,
   JAX_LOCAL_DEVICE_IDS (the same values, for launchers that cannot add flags);
3. a cluster JAX recognises by itself: a SLURM job step with more than one task
   (launch/slurm_gpu.sbatch), Open MPI, or a multi-host Cloud TPU slice (launch/tpu_vm_pod.sh
   passes --distributed=on there, since a TPU VM is not recognisable from the environment).

With none of these the run is a single process and nothing is initialised, so the same
command works on a laptop. A coordinator on a loopback address binds only to loopback.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Mapping

import jax
from absl import flags

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclasses.dataclass(frozen=True)
class DistributedSpec:
    """Arguments of `jax.distributed.initialize`; None leaves a value to JAX's detection."""

    source: str  # what asked for a multi-process run: "flags", "environment", "slurm", ...
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None
    coordinator_bind_address: str | None = None


def _int(value: str | int | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _device_ids(value: str | list[str] | None, name: str) -> tuple[int, ...] | None:
    if not value:
        return None
    items = value.split(",") if isinstance(value, str) else value
    try:
        return tuple(int(item) for item in items)
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers, got {value!r}") from None


def detected_cluster(environ: Mapping[str, str]) -> str | None:
    """A multi-process cluster JAX can read its coordinates from, or None."""
    slurm_vars = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                  "SLURM_LOCALID")
    if all(v in environ for v in slurm_vars) and (_int(environ["SLURM_NTASKS"], "SLURM_NTASKS") or 1) > 1:
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in environ and int(environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return "ompi"
    if len(environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1:
        return "tpu"
    return None


def resolve(mode: str, *, coordinator_address: str | None, num_processes: int | None,
            process_id: int | None, local_device_ids: str | list[str] | None,
            environ: Mapping[str, str]) -> DistributedSpec | None:
    """What to initialise, from flag values and the environment; None means single process.

    Raises ValueError naming the flag (or variable) when the coordinates are incomplete or
    inconsistent, before any process blocks waiting for the others.
    """
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"--distributed must be auto, on or off, got {mode!r}")
    if mode == "off":
        return None
    from_flags = any(v is not None for v in (coordinator_address, num_processes, process_id))
    source = "flags"
    if not from_flags:
        coordinator_address = environ.get("JAX_COORDINATOR_ADDRESS") or None
        num_processes = _int(environ.get("JAX_NUM_PROCESSES"), "JAX_NUM_PROCESSES")
        process_id = _int(environ.get("JAX_PROCESS_ID"), "JAX_PROCESS_ID")
        source = "environment"
    if local_device_ids is None:
        local_device_ids = environ.get("JAX_LOCAL_DEVICE_IDS")
    device_ids = _device_ids(local_device_ids, "--local_device_ids")
    explicit = (coordinator_address, num_processes, process_id)
    if all(v is None for v in explicit):
        cluster = detected_cluster(environ)
        if cluster is None and mode == "auto":
            return None
        return DistributedSpec(source=cluster or "jax auto-detection", local_device_ids=device_ids)
    missing = [name for name, v in zip(("coordinator_address", "num_processes", "process_id"),
                                       explicit) if v is None]
    if missing:
        raise ValueError(
            f"multi-process run from {source}: --{missing[0]} is missing (give "
            f"--coordinator_address, --num_processes and --process_id together, or the "
            f"JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID variables)")
    host, _, port = coordinator_address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--coordinator_address must be HOST:PORT, got {coordinator_address!r}")
    if num_processes < 1:
        raise ValueError(f"--num_processes must be >= 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"--process_id={process_id} is outside [0, {num_processes}) "
                         f"(--num_processes={num_processes})")
    bind = f"{host}:{port}" if host in LOOPBACK_HOSTS else None
    return DistributedSpec(source=source, coordinator_address=coordinator_address,
                           num_processes=num_processes, process_id=process_id,
                           local_device_ids=device_ids, coordinator_bind_address=bind)


def initialize(spec: DistributedSpec | None) -> None:
    """jax.distributed.initialize as `spec` says; nothing for a single-process run."""
    if spec is None:
        return
    logging.info("joining a multi-process run (%s): coordinator %s, process %s of %s",
                 spec.source, spec.coordinator_address or "auto", spec.process_id,
                 spec.num_processes)
    jax.distributed.initialize(
        coordinator_address=spec.coordinator_address,
        num_processes=spec.num_processes,
        process_id=spec.process_id,
        local_device_ids=list(spec.local_device_ids) if spec.local_device_ids else None,
        coordinator_bind_address=spec.coordinator_bind_address,
    )
    logging.info("process %d of %d: %d local devices, %d in all", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())


def define_flags() -> None:
    """--distributed, --coordinator_address, --num_processes, --process_id, --local_device_ids:
    called by the define_flags of the commands that run multi-process, never at import (a
    library module's flags would collide with those of the commands importing it)."""
    flags.DEFINE_enum(
        "distributed", "auto", ["auto", "on", "off"],
        "auto: join a multi-process run when a coordinator is given or a cluster is detected; "
        "on: always call jax.distributed.initialize (TPU VM pods); off: single process")
    flags.DEFINE_string("coordinator_address", None,
                        "HOST:PORT of process 0's coordinator (all processes agree)")
    flags.DEFINE_integer("num_processes", None, "processes in the run")
    flags.DEFINE_integer("process_id", None, "this process, 0 .. num_processes-1")
    flags.DEFINE_list("local_device_ids", None,
                      "devices this process uses, e.g. 0,1,2,3 (default: all visible)")


def initialize_from_flags() -> None:
    """The call at the top of a CLI's main(): resolve flags and environment, then initialise."""
    values = flags.FLAGS
    initialize(resolve(
        values.distributed,
        coordinator_address=values.coordinator_address,
        num_processes=values.num_processes,
        process_id=values.process_id,
        local_device_ids=values.local_device_ids,
        environ=os.environ,
    ))
