"""bert.allocator: where its settings come from, how they are applied, the page faults they save."""
import logging
import os
import platform
import subprocess
import sys

import pytest

from bert import allocator

GLIBC_LINUX = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"


def test_tuned_environment_adds_its_settings_and_keeps_the_users():
    env = allocator.tuned_environment({"HOME": "/h", "GLIBC_TUNABLES": "glibc.malloc.arena_max=4"})
    entries = env["GLIBC_TUNABLES"].split(":")
    assert entries[0] == "glibc.malloc.arena_max=4"  # the user's value wins
    assert "glibc.malloc.mmap_max=0" in entries and env["HOME"] == "/h"
    assert allocator.is_tuned(env) and not allocator.wanted(env)
    assert allocator.tuned_environment(env) == env  # idempotent: no second restart


def test_system_environment_removes_only_its_settings_and_opts_out():
    tuned = allocator.tuned_environment({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"})
    system = allocator.system_environment(tuned)
    assert system["GLIBC_TUNABLES"] == "glibc.malloc.tcache_count=0"
    assert system[allocator.OPT_OUT] == "system" and not allocator.wanted(system)
    assert "GLIBC_TUNABLES" not in allocator.system_environment(allocator.tuned_environment({}))


@pytest.mark.skipif(not GLIBC_LINUX, reason="the settings are glibc's")
def test_only_cpu_runs_are_tuned():
    assert allocator.wanted({"JAX_PLATFORMS": "cpu"})
    assert not allocator.wanted({"JAX_PLATFORMS": "cuda"})
    assert not allocator.wanted({"JAX_PLATFORMS": "cpu", allocator.OPT_OUT: "system"})
    # `applies` ignores whether the settings are in effect already (a re-executed parent).
    tuned_cpu = allocator.tuned_environment({"JAX_PLATFORMS": "cpu"})
    assert allocator.applies(tuned_cpu) and not allocator.wanted(tuned_cpu)
    assert not allocator.applies(allocator.tuned_environment({"JAX_PLATFORMS": "cuda"}))


def test_bench_workers_follow_the_host_unless_told(monkeypatch):
    from benchmarks import step as bench

    monkeypatch.setattr(bench, "FLAGS", type("Flags", (), {"allocator": "auto"}))
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    assert bench.worker_allocator("bert-jax") == "system"
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv(allocator.OPT_OUT, "system")  # as the test suite runs
    assert bench.worker_allocator("bert-jax") == "system"
    monkeypatch.delenv(allocator.OPT_OUT)
    expected = "tuned" if GLIBC_LINUX else "system"
    assert bench.worker_allocator("bert-jax") == bench.worker_allocator("torch") == expected
    assert bench.worker_allocator("bert-jax/system_allocator") == "system"
    bench.FLAGS.allocator = "tuned"  # asked for: every worker, whatever the host
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    assert bench.worker_allocator("hf_flax") == "tuned"


_PRINT_TUNABLES = ("import os; from bert.allocator import reexec_with_tuned_allocator as r; r(); "
                   "print(os.environ.get('GLIBC_TUNABLES'))")


@pytest.mark.skipif(not GLIBC_LINUX, reason="the settings are glibc's")
@pytest.mark.parametrize("opt_out", [None, "system"])
def test_a_command_restarts_itself_once_with_the_settings(opt_out, monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv(allocator.OPT_OUT, raising=False)
    if opt_out:
        monkeypatch.setenv(allocator.OPT_OUT, opt_out)
    done = subprocess.run([sys.executable, "-c", _PRINT_TUNABLES], capture_output=True,
                          text=True, check=True)
    lines = done.stdout.splitlines()
    assert len(lines) == 1  # the code ran once, after the restart (or without one)
    assert (lines[0] == "None") == (opt_out == "system")
    assert opt_out or allocator.is_tuned({"GLIBC_TUNABLES": lines[0]})


# A step whose scratch buffer (a transposed 64 MiB copy) XLA allocates at every execution; the
# first executions settle the heap's layout, then the tuned allocator hands back the same pages
# (the fewest faults of five steps: one settled step shows it).
_FAULTS_PER_STEP = """
import resource, jax, jax.numpy as jnp
step = jax.jit(lambda x: (jnp.swapaxes(x * 2.0, 0, 2) @ jnp.ones((64, 8))).sum())
x = jnp.ones((64, 256, 1024))
for _ in range(10):
    step(x).block_until_ready()
faults = []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults))
"""


# The same step, with the settings applied by the running interpreter once jax is imported, as
# the commands do (`allocator.configure` before the backend starts).
_CONFIGURE = "import sys, jax; from bert import allocator; print(allocator.configure(sys.argv[1]))\n"


@pytest.mark.skipif(not GLIBC_LINUX, reason="the settings are glibc's")
def test_tuned_allocator_maps_the_step_scratch_buffer_once():
    pages = 64 * 256 * 1024 * 4 // 4096
    faults = {}
    runs = {"tunables": (allocator.tuned_environment, []),
            "mallopt": (allocator.system_environment, ["tuned"]),
            "system": (allocator.system_environment, ["auto"])}
    for name, (environment, argv) in runs.items():
        script = (_CONFIGURE if argv else "") + _FAULTS_PER_STEP
        done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True,
                              text=True, check=True, env=environment(dict(_clean_environ())))
        *applied, count = done.stdout.split()
        assert applied == ({"tuned": ["tuned"], "auto": ["system"]}[argv[0]] if argv else [])
        faults[name] = float(count)
    # Reused memory faults no page in; with glibc's defaults the buffer is mapped anew each step
    # (unless the kernel backs it with huge pages, which also spares most faults).
    assert faults["tunables"] < pages / 100 and faults["mallopt"] < pages / 100, faults
    assert faults["system"] > pages / 2 or _huge_pages_always(), faults



# Steps back to back, each freeing a 256 MiB scratch buffer and asking for the next one: the
# resident set from the third step to the fortieth (MiB).
_GROWTH = """
import resource, sys, jax, jax.numpy as jnp
from bert import allocator
print(allocator.configure(sys.argv[1]), jax.config.values["jax_cpu_enable_async_dispatch"])
step = jax.jit(lambda x: (jnp.swapaxes(x * 2.0, 0, 2) @ jnp.ones((256, 8))).sum())
x = jnp.ones((256, 256, 1024))
resident = []
for _ in range(40):
    step(x).block_until_ready()
    resident.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
print(resident[-1] - resident[2])
"""


@pytest.mark.skipif(not GLIBC_LINUX, reason="the settings are glibc's")
def test_tuned_heap_keeps_one_scratch_buffer_across_back_to_back_steps():
    """Under the tuned settings CPU computations run inline, so a step has released its scratch
    buffer before the next asks for one. Dispatched asynchronously the two overlapped now and
    then and the never-trimmed heap kept both: 3 of 4 such processes grew by 512-1280 MiB."""
    done = subprocess.run([sys.executable, "-c", _GROWTH, "tuned"], capture_output=True,
                          text=True, check=True,
                          env=allocator.system_environment(dict(_clean_environ())))
    applied, growth = done.stdout.splitlines()
    assert applied == "tuned False"
    assert int(growth) < 64, f"the heap grew by {growth} MiB"


def test_config_then_environment_then_the_platform_decide(monkeypatch):
    cpu = {"JAX_PLATFORMS": "cpu"}
    assert allocator.resolve("system", {**cpu, allocator.OPT_OUT: "tuned"}) == (
        "system", "config.host_allocator")
    assert allocator.resolve("auto", {**cpu, allocator.OPT_OUT: "system"}) == (
        "system", allocator.OPT_OUT)
    assert allocator.resolve("auto", {"JAX_PLATFORMS": "cuda"})[0] == "system"
    if GLIBC_LINUX:
        assert allocator.resolve("auto", cpu)[0] == "tuned"
    with pytest.raises(ValueError, match="config.host_allocator"):
        allocator.resolve("fast", cpu)
    with pytest.raises(ValueError, match=allocator.OPT_OUT):
        allocator.resolve("auto", {allocator.OPT_OUT: "off"})


def test_the_setting_in_effect_is_announced(caplog):
    caplog.set_level(logging.INFO)
    assert allocator.configure("system", {}) == "system"
    assert "host allocator: the system's defaults (config.host_allocator" in caplog.text


def _clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", allocator.OPT_OUT)}


def _huge_pages_always() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" in f.read()
    except OSError:
        return False
