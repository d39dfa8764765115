"""`python -m bert.finetune` on bad input: one line naming the problem, non-zero exit, no traceback.

Every case stops before compiling anything, so each costs the command's start-up.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.kill_resume import REPO
from tests.test_finetune import CONFIGS, FIXTURES, finetune_env, write_model_folder

PREFIX = "bert.finetune: error: "


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_model_folder(tmp_path_factory.mktemp("finetune_cli") / "model")


def _finetune(tmp_path: Path, model: Path, task: str, *flags: str, devices: int = 1
              ) -> subprocess.CompletedProcess:
    env = finetune_env(tmp_path / "compile_cache")
    env["XLA_FLAGS"] += f" --xla_force_host_platform_device_count={devices}"
    command = [sys.executable, "-m", "bert.finetune", "--config", str(CONFIGS / f"{task}.py"),
               f"--workdir={tmp_path / 'run'}", f"--config.init_checkpoint={model}",
               "--config.max_seq_len=32", "--config.batch_size=4", *flags]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _squad_without_question(path: Path) -> Path:
    data = json.loads((FIXTURES / "squad_v1_train.json").read_text())
    del data["data"][0]["paragraphs"][0]["qas"][1]["question"]
    return _write(path, json.dumps(data))


# (task, files to write {flag: (name, text or writer)}, other flags, what the message must name)
CASES = {
    "missing train file": (
        "sst2", {}, ["--config.train_file=/nonexistent/SST-2/train.tsv"],
        ["/nonexistent/SST-2/train.tsv", "no such file"]),
    "unknown label": (
        "sst2", {"train_file": ("train.tsv", "sentence\tlabel\ngood film\t1\nbad film\t2\n")}, [],
        ["train.tsv:3", "label", "'2'"]),
    "malformed table row": (
        "classify", {"train_file": ("train.tsv", "text\tlabel\ngood film\tpos\nbad film\n")},
        [], ["train.tsv:3", "label"]),
    "bad SQuAD record": (
        "squad_v1", {"train_file": ("train.json", _squad_without_question)},
        ["--config.max_seq_len=64", "--config.max_query_length=16"],
        ["train.json", "'t2'", "question"]),
    "CoNLL line with one field": (
        "ner", {"train_file": ("train.conll", "EU B-ORG\nrejects O\n\nBRUSSELS\n")}, [],
        ["train.conll:4", "BRUSSELS"]),
    "unknown task": (
        "sst2", {}, ["--config.task=sst5", f"--config.train_file={FIXTURES}/glue/SST-2/dev.tsv"],
        ["config.task", "sst5"]),
}


def _check_one_line_error(done: subprocess.CompletedProcess, names: list[str]) -> str:
    assert done.returncode != 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith(PREFIX)]
    assert len(errors) == 1, done.stderr[-3000:]
    assert done.stderr.rstrip().endswith(errors[0])
    for name in names:
        assert name in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_naming_the_problem(tmp_path, model, case):
    task, files, flags, names = CASES[case]
    for key, (name, content) in files.items():
        path = tmp_path / name
        if callable(content):
            content(path)
        else:
            _write(path, content)
        flags = [*flags, f"--config.{key}={path}"]
    _check_one_line_error(_finetune(tmp_path, model, task, *flags), names)


def test_batch_not_divisible_by_devices_is_refused_naming_the_keys(tmp_path, model):
    done = _finetune(tmp_path, model, "sst2", f"--config.train_file={FIXTURES}/glue/SST-2/dev.tsv",
                     "--config.batch_size=3", devices=2)
    _check_one_line_error(done, ["config.batch_size=3", "config.mesh.data=2"])
