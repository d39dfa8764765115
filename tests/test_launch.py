"""Launchers: each --dry-run prints well-formed commands that start bert.pretrain as intended."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = "experiments/pretrain/tiny.py"
OVERRIDES = ["--config.train_steps=5", "--config.data.train_files=data/sotu/train/19[0-4]*.txt"]
SLURM_VARS = ("SLURM_JOB_NODELIST", "SLURM_NNODES", "SLURM_GPUS_ON_NODE")


def _dry_run(script: str, *args: str, env: dict[str, str] | None = None) -> list[list[str]]:
    """The commands `launch/<script> --dry-run ...` prints, each split as the shell would."""
    base = {k: v for k, v in os.environ.items() if k not in SLURM_VARS}
    base["PYTHON"] = sys.executable
    done = subprocess.run(["bash", f"launch/{script}", "--dry-run", *args], cwd=REPO,
                          env={**base, **(env or {})}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [shlex.split(line) for line in done.stdout.splitlines()]


def _pretrain_args(words: list[str], workdir: str) -> list[str]:
    """The arguments after `python -m bert.pretrain`, checked to start with config and workdir."""
    start = words.index("bert.pretrain")
    assert words[start - 1] == "-m"
    args = words[start + 1:]
    assert args[:4] == ["--config", CONFIG, "--workdir", workdir]
    return args


# Parses argv as `python -m bert.pretrain` would, without running it: unknown flags and config
# overrides naming no key raise (the config file is loaded and the overrides applied).
_PARSE_ONLY = ("import sys; from bert import cli, config, pretrain; pretrain.define_flags(); "
               "cli.config_from_flags('pretrain', cli.parse_flags(sys.argv), config.validate, "
               "config.pretraining_config)")


def _flags_parse(command: list[str]) -> None:
    """bert.pretrain accepts every flag and config override of `command`."""
    start = command.index("bert.pretrain") - 1
    parse = command[:start] + ["-c", _PARSE_ONLY] + command[start + 2:]
    done = subprocess.run(parse, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_flag_parsing_check_catches_unknown_flags_and_keys():
    good = [sys.executable, "-m", "bert.pretrain", "--config", CONFIG, "--workdir", "w"]
    _flags_parse(good + ["--process_id=0"])
    for bad in ("--config.train_stepz=5", "--coordinator=127.0.0.1:1"):
        with pytest.raises(AssertionError):
            _flags_parse(good + [bad])


def test_local_runs_pretrain_with_the_arguments_given():
    (command,) = _dry_run("local.sh", CONFIG, "runs/tiny dir", *OVERRIDES)
    assert command[:3] == [sys.executable, "-m", "bert.pretrain"]
    assert _pretrain_args(command, "runs/tiny dir")[4:] == OVERRIDES
    _flags_parse(command)


def test_multiprocess_starts_one_process_per_id_around_one_loopback_coordinator():
    commands = _dry_run("multiprocess.sh", "--processes", "3", "--devices-per-process", "2",
                        CONFIG, "runs/mp", *OVERRIDES)
    assert len(commands) == 3
    coordinators = set()
    for process_id, command in enumerate(commands):
        assert command[:3] == ["env", "JAX_PLATFORMS=cpu",
                               "XLA_FLAGS=--xla_force_host_platform_device_count=2"]
        args = _pretrain_args(command, "runs/mp")
        assert args[4:6] == OVERRIDES
        named = dict(a.split("=", 1) for a in args[6:])
        assert named["--num_processes"] == "3" and named["--process_id"] == str(process_id)
        coordinators.add(named["--coordinator_address"])
    (coordinator,) = coordinators
    host, port = coordinator.split(":")
    assert host == "127.0.0.1" and port.isdigit()
    _flags_parse(commands[1])


def test_multiprocess_gives_each_process_its_own_gpus():
    commands = _dry_run("multiprocess.sh", "--processes", "2", "--gpus-per-process", "4",
                        "--port", "9999", CONFIG, "runs/mp")
    assert [c[-1] for c in commands] == ["--local_device_ids=0,1,2,3", "--local_device_ids=4,5,6,7"]
    assert all("--coordinator_address=127.0.0.1:9999" in c for c in commands)


def test_tpu_pod_copies_installs_and_starts_the_same_command_on_every_worker():
    commands = _dry_run("tpu_vm_pod.sh", "--name", "bert-v4", "--zone", "us-central2-b",
                        "--create", "--accelerator-type", "v4-64", CONFIG,
                        "gs://bucket/runs/tiny", *OVERRIDES)
    create, archive, copy, install, train = commands
    assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "bert-v4"]
    assert create[create.index("--accelerator-type") + 1] == "v4-64"
    assert archive[:2] == ["git", "archive"]
    assert copy[4] == "scp" and "--worker=all" in copy
    for ssh in (install, train):
        assert ssh[4:6] == ["ssh", "bert-v4"] and "--worker=all" in ssh
        assert ssh[ssh.index("--zone") + 1] == "us-central2-b"
    assert install[install.index("--command") + 1].endswith(
        "&& cd bert-jax && python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu,gcs]'")
    remote = shlex.split(train[train.index("--command") + 1])
    assert remote[:3] == ["cd", "bert-jax", "&&"]
    assert remote[3:6] == [".venv/bin/python", "-m", "bert.pretrain"]
    args = _pretrain_args(remote, "gs://bucket/runs/tiny")
    assert args[4:] == OVERRIDES + ["--distributed=on"]


@pytest.mark.parametrize("per_gpu, tasks, devices", [
    ([], 3, "--local_device_ids=0,1,2,3"),
    (["--per-gpu"], 12, "--local_device_ids=$SLURM_LOCALID"),
])
def test_slurm_runs_one_process_per_node_or_gpu_with_the_first_node_as_coordinator(
        per_gpu, tasks, devices):
    job = {"SLURM_JOB_NODELIST": "gpu[07-08,11]", "SLURM_NNODES": "3", "SLURM_GPUS_ON_NODE": "4"}
    install, command = _dry_run("slurm_gpu.sbatch", *per_gpu, CONFIG, "/shared/runs/tiny",
                                *OVERRIDES, env=job)
    assert install == [sys.executable, "-m", "pip", "install", "-q", "-e", f"{REPO}[cuda,gcs]"]
    assert command[0] == "srun" and "--nodes=3" in command and f"--ntasks={tasks}" in command
    assert command[-3:-1] == ["bash", "-c"]
    task = shlex.split(command[-1])
    assert task[:3] == ["cd", str(REPO), "&&"] and task[3:5] == ["exec", sys.executable]
    args = _pretrain_args(task, "/shared/runs/tiny")
    assert args[4:] == OVERRIDES + ["--coordinator_address=gpu07:29500",
                                    f"--num_processes={tasks}", "--process_id=$SLURM_PROCID",
                                    devices]


def test_slurm_dry_run_outside_a_job_prints_a_sample_two_node_job():
    (command,) = _dry_run("slurm_gpu.sbatch", "--skip-install", CONFIG, "/shared/runs/tiny")
    assert "--nodes=2" in command and "--coordinator_address=node01:29500" in command[-1]


def test_slurm_without_an_interpreter_installs_into_a_new_repo_venv(tmp_path):
    # A copy of the launchers beside no .venv, run with no $PYTHON: what a fresh checkout does.
    (tmp_path / "launch").mkdir()
    for name in ("common.sh", "slurm_gpu.sbatch"):
        (tmp_path / "launch" / name).write_text((REPO / "launch" / name).read_text())
    (tmp_path / "tiny.py").write_text("")
    env = {k: v for k, v in os.environ.items() if k not in (*SLURM_VARS, "PYTHON")}
    done = subprocess.run(["bash", "launch/slurm_gpu.sbatch", "--dry-run", "tiny.py", "/shared/w"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    venv, install, command = [shlex.split(line) for line in done.stdout.splitlines()]
    python = f"{tmp_path}/.venv/bin/python"
    assert venv == ["python3", "-m", "venv", f"{tmp_path}/.venv"]
    assert install == [python, "-m", "pip", "install", "-q", "-e", f"{tmp_path}[cuda,gcs]"]
    assert f"exec {python} -m bert.pretrain" in command[-1]


@pytest.mark.parametrize("script", ["local.sh", "multiprocess.sh", "slurm_gpu.sbatch"])
def test_a_missing_config_or_a_malformed_override_stops_before_launching(script):
    for args, message in ([("experiments/pretrain/nope.py", "runs/x"), "config file"],
                          [(CONFIG, "runs/x", "train_steps=5"), "--config.key=value"]):
        done = subprocess.run(["bash", f"launch/{script}", "--dry-run", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and message in done.stderr and not done.stdout
