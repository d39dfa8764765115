"""Multi-host: two processes x 4 fake CPU devices joined by jax.distributed on 127.0.0.1 take
the same steps as one process x 8 devices, each reading its own half of every global batch,
writing checkpoints collectively and metrics only from process 0; and the coordinates of a
multi-process run are read from flags, the environment or a SLURM job.

The worker half of the two-process test is this file run as a module:
    python -m tests.test_multihost PROCESS_ID PORT TOKENIZER_DIR CACHE_DIR WORKDIR
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from bert import checkpoint, data, distributed, objectives, partitioning
from bert.config import model_config, validate
from bert.metrics import MetricsWriter, read_metrics
from bert.model import BertForPreTraining
from bert.optim import OptimizerSettings, make_optimizer
from bert.train import PretrainingTask
from tests.fakes import tiny_config
from tests.test_data_support import small_tokenizer_dir

REPO = Path(__file__).resolve().parents[1]
PROCESSES = 2
JIT_STEPS = 3  # then one pmap step, restored from the jit checkpoint
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _config(tokenizer_dir: str, cache_dir: str):
    config = tiny_config(**{
        "model.num_layers": 1, "model.hidden_size": 32, "model.num_heads": 2,
        "model.vocab_size": 1000, "batch_size": 16,
        "data.train_files": str(REPO / "data" / "sotu" / "eval" / "19[68]5_*.txt"),
        "data.tokenizer": tokenizer_dir, "data.cache_dir": cache_dir,
    })
    validate(config)
    return config


def _loss(sums) -> float:
    return objectives.finalize_metrics(jax.device_get(sums), 1.0)["loss"]


def _train(config, prepared, workdir: str) -> tuple[list[float], list[dict[str, np.ndarray]]]:
    """JIT_STEPS jit steps from a fresh state, a collective checkpoint, then one pmap step from
    that checkpoint and another checkpoint: the same code for one process and for each of two.

    Returns the losses and the host batches this process read.
    """
    model, tx = PretrainingTask(BertForPreTraining(model_config(config)), 1.0), make_optimizer(OptimizerSettings.from_config(config))
    runner = partitioning.build_runner(config, model, tx, compiler_options=FAST_COMPILE)
    batches = data.train_batches(
        prepared, batch_size_per_host=data.per_host_batch_size(config.batch_size, jax.process_count()),
        seed=config.seed, process_index=jax.process_index(), process_count=jax.process_count())
    dropout_rng = jax.random.key(1)  # dropout on: its masks must agree across processes too
    state = runner.init_state(jax.random.key(config.seed))
    losses, read = [], []
    for _ in range(JIT_STEPS):
        read.append(next(batches))
        state, sums = runner.train_step(state, read[-1], dropout_rng)
        losses.append(_loss(sums))
    manager = checkpoint.CheckpointManager(workdir, keep=2, async_save=False)
    manager.save(JIT_STEPS, state, {"step": JIT_STEPS}, force=True)  # every process calls save

    pmap_config = config.copy_and_resolve_references()
    pmap_config.parallelism = "pmap"
    pmap_runner = partitioning.build_runner(pmap_config, model, tx)
    state, _ = manager.restore(JIT_STEPS, pmap_runner.abstract_state)
    read.append(next(batches))
    state, sums = pmap_runner.train_step(state, read[-1], dropout_rng)
    losses.append(_loss(sums))
    manager.save(JIT_STEPS + 1, state, {"step": JIT_STEPS + 1}, force=True)
    manager.close()
    batches.close()

    writer = MetricsWriter(workdir)  # a no-op everywhere but process 0
    writer.write(JIT_STEPS + 1, {"loss": losses[-1]})
    writer.close()
    return losses, read


def _worker(process_id: int, port: int, tokenizer_dir: str, cache_dir: str, workdir: str) -> None:
    distributed.initialize(distributed.resolve(
        "auto", coordinator_address=f"127.0.0.1:{port}", num_processes=PROCESSES,
        process_id=process_id, local_device_ids=None, environ={}))
    assert jax.process_count() == PROCESSES and jax.local_device_count() == 4
    config = _config(tokenizer_dir, cache_dir)
    _, prepared = data.build(config, workdir)
    losses, read = _train(config, prepared, workdir)
    out = Path(workdir) / f"process_{jax.process_index()}"
    np.savez(f"{out}.npz", **{f"{step}/{k}": v for step, b in enumerate(read) for k, v in b.items()})
    Path(f"{out}.json").write_text(json.dumps({"losses": losses}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(single, two): one process's losses and batches, and the two processes' workdir.

    The two workers start first and the single-process run goes on while they compile.
    """
    root = tmp_path_factory.mktemp("multihost")
    config = _config(str(small_tokenizer_dir()), str(root / "cache"))
    _, prepared = data.build(config, root / "single")  # the workers find it in the cache
    two = root / "two"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    # Optimisation level 0 halves compile time; the jit steps compile with it on both sides
    # (FAST_COMPILE), pmap (which takes no compiler options) only in the workers.
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=4 "
                         "--xla_backend_optimization_level=0",
               JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.test_multihost", str(i), str(port),
             config.data.tokenizer, config.data.cache_dir, str(two)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(PROCESSES)
    ]
    try:
        single = _train(config, prepared, str(root / "single"))
        logs = [w.communicate(timeout=420)[0] for w in workers]
    finally:
        for w in workers:
            w.kill()
    for i, (w, log) in enumerate(zip(workers, logs)):
        assert w.returncode == 0, f"process {i} failed:\n{log[-4000:]}"
    return config, root / "single", single, two


def test_two_processes_take_the_same_steps_as_one(runs):
    _, _, (reference_losses, _), two_processes = runs
    for process in range(PROCESSES):
        losses = json.loads((two_processes / f"process_{process}.json").read_text())["losses"]
        np.testing.assert_allclose(losses, reference_losses, rtol=1e-5)


def test_each_process_reads_its_own_half_of_every_global_batch(runs):
    _, _, (_, reference_batches), two_processes = runs
    halves = [np.load(two_processes / f"process_{p}.npz") for p in range(PROCESSES)]
    for step, whole in enumerate(reference_batches):
        rows = len(whole["input_ids"]) // PROCESSES
        for process, half in enumerate(halves):
            for key, value in whole.items():
                np.testing.assert_array_equal(half[f"{step}/{key}"],
                                              value[process * rows:(process + 1) * rows])
        first, second = (half[f"{step}/input_ids"] for half in halves)
        assert not {r.tobytes() for r in first} & {r.tobytes() for r in second}


def test_collective_checkpoints_hold_the_single_process_params(runs):
    config, single_workdir, _, two_processes = runs
    model, tx = PretrainingTask(BertForPreTraining(model_config(config)), 1.0), make_optimizer(OptimizerSettings.from_config(config))
    runner = partitioning.build_runner(config, model, tx)
    for step in (JIT_STEPS, JIT_STEPS + 1):  # written by the jit runner, then by pmap
        managers = [checkpoint.CheckpointManager(str(d), keep=2)
                    for d in (single_workdir, two_processes)]
        (single, _), (double, meta) = (m.restore(step, runner.abstract_state) for m in managers)
        for manager in managers:
            manager.close()
        assert meta["step"] == step == int(double.step)
        for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(double.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)


def test_only_process_zero_writes_metrics(runs):
    two_processes = runs[-1]
    records = read_metrics(two_processes / "metrics.jsonl")
    assert [r["step"] for r in records] == [JIT_STEPS + 1]


# --- where the coordinates of a multi-process run come from --------------------------------


def _resolve(environ=None, mode="auto", **flags):
    values = dict(coordinator_address=None, num_processes=None, process_id=None,
                  local_device_ids=None)
    values.update(flags)
    return distributed.resolve(mode, environ=environ or {}, **values)


def test_single_process_unless_asked():
    assert _resolve() is None
    assert _resolve({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
                     "SLURM_LOCALID": "0", "SLURM_STEP_NODELIST": "a1"}) is None
    assert _resolve(mode="off", coordinator_address="h:1", num_processes=2, process_id=0) is None


def test_flags_then_environment_with_loopback_binding():
    spec = _resolve(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=1,
                    local_device_ids=["0", "1"])
    assert (spec.source, spec.num_processes, spec.process_id) == ("flags", 2, 1)
    assert spec.local_device_ids == (0, 1)
    assert spec.coordinator_bind_address == "127.0.0.1:1234"  # loopback only
    spec = _resolve({"JAX_COORDINATOR_ADDRESS": "node7:8476", "JAX_NUM_PROCESSES": "4",
                     "JAX_PROCESS_ID": "3", "JAX_LOCAL_DEVICE_IDS": "2,3"})
    assert (spec.source, spec.coordinator_address, spec.process_id) == ("environment", "node7:8476", 3)
    assert spec.local_device_ids == (2, 3) and spec.coordinator_bind_address is None


def test_clusters_are_left_to_jax_detection():
    slurm = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16", "SLURM_PROCID": "5",
             "SLURM_LOCALID": "1", "SLURM_STEP_NODELIST": "gpu[01-02]"}
    spec = _resolve(slurm)
    assert spec.source == "slurm" and spec.coordinator_address is None
    assert _resolve(mode="on").source == "jax auto-detection"  # TPU VM pods


@pytest.mark.parametrize("flags, message", [
    (dict(coordinator_address="h:1", num_processes=2), "--process_id is missing"),
    (dict(coordinator_address="h", num_processes=2, process_id=0), "--coordinator_address must be HOST:PORT"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=2), r"--process_id=2 is outside \[0, 2\)"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=0, local_device_ids=["x"]),
     "--local_device_ids must be comma-separated integers"),
])
def test_incomplete_coordinates_name_the_flag(flags, message):
    with pytest.raises(ValueError, match=message):
        _resolve(**flags)


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:6])
