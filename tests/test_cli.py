"""Every command-line module can be imported next to the others and parses its own flags."""
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Each command and one flag of its own that its --help must list.
COMMANDS = {"bert.pretrain": "--workdir", "bert.demo": "--examples", "benchmarks.step": "--vs",
            "benchmarks.data_prep": "--sections", "bert.features": "--layers",
            "bert.convert": "from-hf", "bert.prepare": "--num_shards",
            "bert.sweep": "--pretrain_seeds", "bert.ablation_data": "--output"}


def test_commands_import_together():
    # Flags defined at import time would collide here (--config, --output, --batch_size).
    for name in COMMANDS:
        importlib.import_module(name)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_help(name):
    done = subprocess.run([sys.executable, "-m", name, "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    # absl exits 1 after --help, argparse 0; a traceback is what must not happen.
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert COMMANDS[name] in done.stdout, done.stdout[-2000:]
