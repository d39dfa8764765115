"""A run that is killed loses nothing; broken checkpoints, NaNs and bad inputs never cost it.

The end-to-end tests drive `python -m bert.pretrain` on the tiny config (one CPU device) with
the helpers of scripts/kill_resume.py; every run shares one data cache and one compilation
cache, so a restart costs its start-up, not a compilation.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from orbax.checkpoint._src.path import atomicity

from bert import checkpoint
from bert.metrics import read_metrics
from scripts.kill_resume import (CHECKPOINT_EVERY, REPO, compare_runs, pretrain_command,
                                 pretrain_env, random_targets, resumed_step, run_to_end,
                                 run_until)

STEPS = 24
# A restore that fails (the point of several tests here) leaves orbax's read coroutines
# un-awaited; Python reports them when they are collected. Harmless.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict:
    """The uninterrupted reference run, and the data and compilation caches it fills."""
    root = tmp_path_factory.mktemp("reliability")
    env = pretrain_env(root / "compile_cache")
    run_to_end(pretrain_command(root / "reference", root / "data", STEPS), env)
    return dict(root=root, env=env, reference=root / "reference")


def _newest_checkpoint(workdir: Path) -> Path:
    steps = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    return workdir / "checkpoints" / str(max(steps))


def _largest_array_file(step_dir: Path) -> Path:
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def interrupted(shared) -> dict:
    """The same run stopped four times at random steps (SIGKILL, SIGTERM, SIGKILL, SIGKILL)
    and restarted with the same command each time; before the last restart a byte of the
    newest checkpoint's array data is flipped."""
    workdir = shared["root"] / "interrupted"
    command = pretrain_command(workdir, shared["root"] / "data", STEPS)
    seed = random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    # From the third checkpoint on: a kill during a save then always leaves an older one.
    targets = random_targets(rng, 4, 3 * CHECKPOINT_EVERY, STEPS - 2)
    signals = [signal.SIGKILL, signal.SIGTERM, signal.SIGKILL, signal.SIGKILL]
    stops = []
    for target, signum in zip(targets, signals):
        status, log = run_until(command, shared["env"], workdir, target, signum,
                                delay=rng.uniform(0, 0.3))
        stops.append(dict(signal=signum, target=target, status=status, log=log))
    corrupted = _newest_checkpoint(workdir)
    _flip_byte(_largest_array_file(corrupted), offset=rng.randrange(1 << 20))
    final_log = run_to_end(command, shared["env"])
    return dict(workdir=workdir, stops=stops, final_log=final_log, corrupted=corrupted,
                where=f"seed {seed}, signals after steps {targets}")


def test_run_killed_at_random_steps_ends_bit_identical_with_the_same_metrics(shared, interrupted):
    kills = [s for s in interrupted["stops"] if s["signal"] == signal.SIGKILL]
    assert len(kills) == 3 and all(s["status"] == -signal.SIGKILL for s in kills)
    # Every restart continued from a checkpoint rather than from scratch.
    restarts = [resumed_step(s["log"]) for s in interrupted["stops"][1:]]
    assert all(step > 0 for step in restarts), (restarts, interrupted["where"])
    # Params and optimizer state bit for bit; every metrics row, every field but the timings.
    assert compare_runs(shared["reference"], interrupted["workdir"]) == [], interrupted["where"]


def test_sigterm_saves_the_current_step_exits_cleanly_and_the_next_start_resumes_there(
        interrupted):
    (index, stop), = [(i, s) for i, s in enumerate(interrupted["stops"])
                      if s["signal"] == signal.SIGTERM]
    assert stop["status"] == 0, stop["log"][-2000:]
    marker = "SIGTERM: stopped after step "
    assert marker in stop["log"] and "Traceback" not in stop["log"]
    saved = int(stop["log"].split(marker, 1)[1].split()[0])
    assert saved >= stop["target"]
    assert resumed_step(interrupted["stops"][index + 1]["log"]) == saved


def test_corrupted_newest_checkpoint_is_reported_set_aside_and_the_previous_one_used(
        interrupted):
    log, corrupted = interrupted["final_log"], interrupted["corrupted"]
    assert f"checkpoint step {corrupted.name} is unusable" in log
    assert 0 < resumed_step(log) < int(corrupted.name)
    set_aside = interrupted["workdir"] / checkpoint.SET_ASIDE_DIR
    assert [p.name.split(".")[0] for p in set_aside.iterdir()] == [corrupted.name]


# --- checkpoints: verified restore, fallback, retention ---------------------------------------

def _state(value: float) -> dict[str, jax.Array]:
    # Random values do not compress: the array's bytes then make up the largest file.
    noise = np.random.default_rng(0).standard_normal((256, 128)).astype(np.float32)
    return {"params": {"w": jnp.asarray(noise + value)}, "count": jnp.array([3, 1, 4], jnp.int32)}


def _abstract() -> dict[str, jax.ShapeDtypeStruct]:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _state(0.0))


def _saved(workdir: Path, steps=(1, 2, 3), keep: int = 3) -> checkpoint.CheckpointManager:
    manager = checkpoint.CheckpointManager(str(workdir), keep=keep)
    for step in steps:
        manager.save(step, _state(step), {"step": step})
    manager.close()
    return checkpoint.CheckpointManager(str(workdir), keep=keep)


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


@pytest.mark.parametrize("damage", ["truncated array file", "flipped byte in array data",
                                    "truncated array metadata", "garbled step metadata"])
def test_broken_newest_checkpoint_is_detected_reported_and_the_previous_one_used(
        tmp_path, caplog, damage):
    manager = _saved(tmp_path)
    newest = tmp_path / "checkpoints" / "3"
    if damage == "truncated array file":
        _truncate(_largest_array_file(newest))
    elif damage == "flipped byte in array data":
        array_file = _largest_array_file(newest)
        _flip_byte(array_file, offset=array_file.stat().st_size // 2)
    elif damage == "truncated array metadata":
        _truncate(newest / "state" / "_METADATA")
    else:
        (newest / "meta" / "metadata").write_text('{"step": 3, "fingerp')
    with caplog.at_level(logging.WARNING):
        step, state, meta = manager.restore_latest(_abstract())
    manager.close()
    assert step == 2 and meta["step"] == 2
    np.testing.assert_array_equal(state["params"]["w"], _state(2)["params"]["w"])
    assert "checkpoint step 3 is unusable" in caplog.text
    if damage == "flipped byte in array data":  # read without complaint: the fingerprints see it
        assert "differ from what was saved" in caplog.text
    assert [p.name.split(".")[0] for p in (tmp_path / checkpoint.SET_ASIDE_DIR).iterdir()] == ["3"]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]  # step 3 can be saved again


def test_without_any_usable_checkpoint_the_error_names_every_step_and_nothing_moves(tmp_path):
    manager = _saved(tmp_path, steps=(1, 2))
    other_shapes = {"params": {"w": jax.ShapeDtypeStruct((256, 64), jnp.float32)},  # new config
                    "count": jax.ShapeDtypeStruct((3,), jnp.int32)}
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"no usable checkpoint .*step 2: .*step 1: "):
        manager.restore_latest(other_shapes)
    manager.close()
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]
    assert not (tmp_path / checkpoint.SET_ASIDE_DIR).exists()


def test_params_of_a_work_directory_come_from_its_newest_good_checkpoint(tmp_path, caplog):
    _saved(tmp_path).close()
    _truncate(_largest_array_file(tmp_path / "checkpoints" / "3"))
    params = checkpoint.load_params(str(tmp_path))
    np.testing.assert_array_equal(params["w"], _state(2)["params"]["w"])
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2", "3"]  # a reader moves nothing


def test_keep_n_never_deletes_the_last_good_checkpoint_when_a_save_fails(tmp_path, monkeypatch):
    manager = checkpoint.CheckpointManager(str(tmp_path), keep=1)
    manager.save(1, _state(1), {"step": 1})
    manager.wait()

    async def disk_full(*args, **kwargs):
        raise OSError("simulated: no space left on device")

    # The new step's files are written, then committing it fails.
    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", disk_full)
    manager.save(2, _state(2), {"step": 2})
    with pytest.raises(checkpoint.CheckpointError,
                       match="failed .*no space left.* step 1, is kept"):
        manager.wait()
    monkeypatch.undo()
    assert manager.all_steps() == [1]
    step, state, _ = manager.restore_latest(_abstract())
    assert step == 1
    # Once a newer save finishes, retention goes back to the newest `keep`.
    manager.save(3, _state(3), {"step": 3})
    manager.close()
    assert manager.all_steps() == [3]


def test_fingerprints_see_every_flipped_bit_and_ignore_sharding():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((16, 8)).astype(np.float32),
              rng.integers(-1000, 1000, (8, 16)).astype(np.int32),
              rng.standard_normal((8, 8)).astype(jnp.bfloat16)]
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(8), ("data",))
    for array in arrays:
        whole = checkpoint.fingerprints({"x": jnp.asarray(array)})
        sharded = jax.device_put(array, NamedSharding(mesh, PartitionSpec("data")))
        assert checkpoint.fingerprints({"x": sharded}) == whole
        bits = array.view(np.uint8).copy()
        for byte, bit in zip(rng.integers(0, bits.size, 20), rng.integers(0, 8, 20)):
            flipped = bits.copy()
            flipped.reshape(-1)[byte] ^= np.uint8(1 << bit)
            assert checkpoint.fingerprints({"x": jnp.asarray(flipped.view(array.dtype))}) != whole
        swapped = array.copy()
        swapped[[0, 1]] = swapped[[1, 0]]
        assert checkpoint.fingerprints({"x": jnp.asarray(swapped)}) != whole


# --- numerical faults ---------------------------------------------------------------------------

# bert.pretrain with the batch of one step poisoned: NaN prediction weights make that step's
# loss and gradients NaN, through the real loss and the real train step.
_POISONED_PRETRAIN = """
import sys
import numpy as np
from absl import app
from bert import cli, data, pretrain

step_to_poison = int(sys.argv[1])
real_train_batches = data.train_batches

def poisoned_train_batches(*args, start_step=0, **kwargs):
    batches = real_train_batches(*args, start_step=start_step, **kwargs)
    for step, batch in enumerate(batches, start_step + 1):
        if step == step_to_poison:
            batch = dict(batch, masked_lm_weights=np.full_like(batch["masked_lm_weights"], np.nan))
        yield batch

data.train_batches = poisoned_train_batches
pretrain.define_flags()
app.run(pretrain.main, argv=["bert.pretrain", *sys.argv[2:]], flags_parser=cli.parse_flags)
"""


def _poisoned_run(shared, name: str, step: int, *overrides: str) -> subprocess.CompletedProcess:
    workdir = shared["root"] / name
    command = pretrain_command(workdir, shared["root"] / "data", 8)
    return subprocess.run([sys.executable, "-c", _POISONED_PRETRAIN, str(step), *command[3:],
                           *overrides], cwd=REPO, env=shared["env"], capture_output=True,
                          text=True, timeout=600)


def test_nonfinite_step_is_skipped_counted_and_logged(shared):
    done = _poisoned_run(shared, "nan_skip", 5, "--config.on_nonfinite=skip")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [r for r in read_metrics(shared["root"] / "nan_skip" / "metrics.jsonl") if "loss" in r]
    assert [(r["step"], r["nonfinite_steps"]) for r in rows] == [(2, 0), (4, 0), (6, 1), (8, 0)]
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["grad_norm"]) for r in rows)
    assert "1 of the 2 steps up to step 6 had a non-finite loss or gradient" in done.stderr


def test_nonfinite_step_can_stop_the_run_with_the_last_good_state_saved(shared):
    done = _poisoned_run(shared, "nan_stop", 5, "--config.on_nonfinite=stop",
                         "--config.checkpoint_every=2")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "bert.pretrain: error: non-finite loss or gradient at step 5" in done.stderr
    workdir = shared["root"] / "nan_stop"
    assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "5"]
    # Step 5 changed nothing: its checkpoint holds step 4's params and optimizer state.
    saved = [json.loads((workdir / "checkpoints" / s / "meta" / "metadata").read_text())
             for s in ("4", "5")]
    differing = {k for k in saved[0]["fingerprints"]
                 if saved[0]["fingerprints"][k] != saved[1]["fingerprints"][k]}
    assert differing == {"step"}


# --- bad config and bad data at the command line -------------------------------------------------

def _pretrain_cli(workdir: Path, *overrides: str, devices: int = 1) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    command = [sys.executable, "-m", "bert.pretrain", "--config", "experiments/pretrain/tiny.py",
               f"--workdir={workdir}", *overrides]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_batch_not_divisible_by_devices_is_refused_before_compiling(tmp_path):
    done = _pretrain_cli(tmp_path, "--config.batch_size=12", "--config.data.eval_files=",
                         "--config.data.train_files=data/sotu/train/191*.txt",
                         "--config.model.vocab_size=1000", devices=8)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert ("bert.pretrain: error: config.batch_size=12 (global) is not divisible by 8"
            in done.stderr)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("corpus, message", [
    ({"a.txt": "One sentence. Another one.\n", "b.bin": b"\x7fELF\x00\x01\x02"},
     r"b\.bin:1: contains NUL bytes"),
    ({"a.txt": "", "b.txt": "\n\n"}, r"no document with at least two sentences in 2 file\(s\) "
                                     r"\(2 empty"),
])
def test_bad_corpus_is_a_one_line_error_naming_the_problem(tmp_path, corpus, message):
    for name, content in corpus.items():
        path = tmp_path / "corpus" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    done = _pretrain_cli(tmp_path / "run", f"--config.data.train_files={tmp_path}/corpus/*",
                         "--config.data.eval_files=")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    error_lines = [line for line in done.stderr.splitlines() if "bert.pretrain: error:" in line]
    assert len(error_lines) == 1 and re.search(message, error_lines[0])
