"""The config front door (bert/cli.py): every key of every shipped config can be set from the
command line, and a mistake in a key or value is one line and exit status 2, never a traceback."""
import glob
import logging
import os
import re
import subprocess
import sys

import pytest
from absl import flags

from bert import cli
from bert.tasks import registry
from bert.config import finetuning_config, model_config, pretraining_config, validate
from bert.optim import OptimizerSettings, learning_rate_schedule

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One row per command that takes a config: its name, its config files, its validation and the
# function whose comments document its keys.
COMMANDS = [
    ("pretrain", "experiments/pretrain/*.py", validate, pretraining_config),
    ("finetune", "experiments/finetune/*.py", registry.validate, finetuning_config),
]
CONFIGS = [pytest.param(command, os.path.relpath(path, REPO), check, documented_by,
                        id=os.path.relpath(path, REPO))
           for command, pattern, check, documented_by in COMMANDS
           for path in sorted(glob.glob(os.path.join(REPO, pattern)))]
PRETRAINING = [param for param in CONFIGS if param.values[0] == "pretrain"]
TINY = "experiments/pretrain/tiny.py"


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def _another_value(leaf: cli.Leaf):
    """A value of the leaf's type that differs from the one it has."""
    if leaf.kind is bool:
        return not leaf.value
    if leaf.kind is int:
        return (leaf.value or 0) + 3
    if leaf.kind is float:
        return leaf.value + 0.25
    if leaf.kind is str:
        return leaf.value + "_x"
    raise AssertionError(f"no command-line value for a {leaf.kind.__name__}")


@pytest.mark.parametrize("command, path, check, documented_by", CONFIGS)
def test_every_leaf_can_be_set_from_the_command_line(command, path, check, documented_by):
    defaults = cli.leaves(cli.load_config(path))
    meanings = cli.key_meanings(documented_by)
    for key, leaf in defaults.items():
        assert meanings.get(key), f"config.{key} has no one-line meaning in {documented_by.__name__}"
        new = _another_value(leaf)
        changed = cli.leaves(cli.load_config(path, [f"--config.{key}={new}"]))
        assert changed[key].value == new and type(changed[key].value) is leaf.kind, key
        assert ({k: v.value for k, v in changed.items() if k != key}
                == {k: v.value for k, v in defaults.items() if k != key}), key


@pytest.mark.parametrize("command, path, check, documented_by", CONFIGS)
def test_print_config_lists_every_key_with_its_value_and_meaning(command, path, check,
                                                                 documented_by, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.config_from_command_line(command, path, ["--config.seed=7"], check, documented_by,
                                     print_config=True)
    assert exit.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    meanings = cli.key_meanings(documented_by)
    leaves = cli.leaves(cli.load_config(path, ["--config.seed=7"]))
    assert len(lines) == len(leaves)
    for line in lines:
        name = line.split()[0]
        value, meaning = line[len(name):].split("  # ", 1)
        key = name.removeprefix("config.")
        assert value.strip() == repr(leaves[key].value) and meaning == meanings[key], line
    assert ["config.seed", "7"] in [line.split()[:2] for line in lines]


def test_meanings_come_from_the_comments_beside_the_defaults():
    meanings = cli.key_meanings(pretraining_config)
    assert list(meanings)[:3] == ["seed", "train_steps", "batch_size"]
    assert meanings["data.mask_prob"] == "fraction of maskable tokens chosen for prediction"
    # Continued on the comment line below, aligned with the first.
    assert meanings["schedule_steps"] == (
        "learning-rate horizon; 0 = train_steps (>0 lets a run stop early and a second phase, "
        "e.g. at longer max_seq_len, continue the same schedule)")


def _front_door(*overrides, path=TINY):
    return cli.config_from_command_line("pretrain", path, list(overrides), validate,
                                        pretraining_config)


def test_derived_model_sizes_take_a_value_of_their_type_or_none():
    config = _front_door("--config.model.num_layers=3", "--config.model.hidden_size=256",
                         "--config.model.num_heads=4", "--config.model.intermediate_size=300")
    bert = model_config(config)
    assert (bert.num_layers, bert.hidden_size, bert.num_heads, bert.intermediate_size) == (3, 256, 4, 300)
    # None (again) derives it: the tiny preset's 2 heads, 4 × 128 wide MLP.
    bert = model_config(_front_door("--config.model.num_heads=4", "--config.model.num_heads=None"))
    assert (bert.num_heads, bert.intermediate_size) == (2, 512)


def test_values_are_parsed_as_the_type_of_their_key():
    config = _front_door("--config.train_steps=1e3", "--config.learning_rate=2e-3",
                         "--config.data.whole_word_mask", "--config.data.tokenizer=a=b.model",
                         "--config.data.eval_files=")
    assert (config.train_steps, config.learning_rate) == (1000, 2e-3)
    assert config.data.whole_word_mask is True
    assert (config.data.tokenizer, config.data.eval_files) == ("a=b.model", "")


def _one_line_error(capsys, *overrides, path=TINY):
    with pytest.raises(SystemExit) as exit:
        _front_door(*overrides, path=path)
    assert exit.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    return captured.err.removeprefix("bert.pretrain: error: ").rstrip("\n")


@pytest.mark.parametrize("override, message", [
    ("--config.learning_rat=0.1",
     "unknown config key config.learning_rat (did you mean config.learning_rate?)"),
    ("--config.data.mask_probability=0.2",
     "unknown config key config.data.mask_probability (did you mean config.data.mask_prob?)"),
    ("--config.num_heads=4",
     "unknown config key config.num_heads (did you mean config.model.num_heads?)"),
    ("--config.data.packng=true",
     "unknown config key config.data.packng (did you mean config.data.packing?)"),
    ("--config.warmup=10",
     "unknown config key config.warmup (did you mean config.warmup_steps?)"),
    ("--config.modle.hidden_size=256",
     "unknown config key config.modle.hidden_size (did you mean config.model.hidden_size?)"),
    ("--config.no_such_key=1",
     "unknown config key config.no_such_key (none is close; --print_config lists every key)"),
])
def test_a_misspelt_key_is_named_with_the_nearest_keys(capsys, override, message):
    assert _one_line_error(capsys, override) == message


@pytest.mark.parametrize("override, message", [
    # The wrong type: the key, the value and what it takes.
    ("--config.train_steps=ten", "config.train_steps=ten: expected an integer"),
    ("--config.train_steps=2.5", "config.train_steps=2.5: expected an integer"),
    ("--config.learning_rate=fast", "config.learning_rate=fast: expected a number"),
    ("--config.data.packing=maybe", "config.data.packing=maybe: expected true or false"),
    ("--config.model.num_heads=four", "config.model.num_heads=four: expected an integer or None"),
    ("--config.train_steps", "--config.train_steps needs a value: --config.train_steps=VALUE"),
    ("--config.model=tiny", "config.model is a section, not a key: set its keys, e.g. "
     "config.model.attention_dropout_rate, config.model.attention_init, config.model.dropout_rate"),
    # Out of range: validate's message names the key, the value and what is allowed.
    ("--config.train_steps=0", "config.train_steps: must be a positive integer, got 0"),
    ("--config.data.mask_prob=1.5", "config.data.mask_prob: must be in (0, 1), got 1.5"),
    ("--config.optim.b1=1", "config.optim.b1: must be in [0, 1), got 1.0"),
    ("--config.parallelism=vmap", "config.parallelism: must be 'jit' or 'pmap', got 'vmap'"),
    ("--config.model.num_layers=0",
     "config.model.num_layers: must be None (the preset's) or >= 1, got 0"),
    ("--config.model.num_heads=3",
     "config.model.hidden_size=128 is not divisible by config.model.num_heads=3"),
])
def test_a_bad_value_is_one_line_naming_key_value_and_what_is_allowed(capsys, override, message):
    assert _one_line_error(capsys, override) == message


@pytest.mark.parametrize("path, message", [
    ("experiments/pretrain/nope.py", "config file experiments/pretrain/nope.py does not exist"),
    ("experiments/pretrain/base.py:256",
     "experiments/pretrain/base.py:256: unknown phase '256': use 128 or 512"),
    ("experiments/pretrain/tiny.py:512",
     "experiments/pretrain/tiny.py:512: get_config() cannot take '512'"),
])
def test_a_bad_config_file_is_one_line(capsys, path, message):
    assert _one_line_error(capsys, path=path) == message


@pytest.mark.parametrize("command, path, check, documented_by", PRETRAINING)
def test_three_steps_validate_and_the_optimizer_cuts_the_warmup(command, path, check,
                                                                 documented_by, caplog):
    shipped = cli.load_config(path)
    overrides = ["--config.train_steps=3"]
    if not shipped.data.train_files:  # the paper's recipes name no corpus
        overrides.append("--config.data.train_files=corpus/*.txt")
    with caplog.at_level(logging.WARNING):
        config = cli.config_from_command_line(command, path, overrides, check, documented_by)
        check(config)  # the training function validates again: the config stays as written
        assert config.warmup_steps == shipped.warmup_steps
        settings = OptimizerSettings.from_config(config)  # once, by the training function
    horizon = shipped.schedule_steps or 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if shipped.warmup_steps > horizon:
        assert settings.warmup_steps == 3
        assert warnings == [f"config.warmup_steps={shipped.warmup_steps} is longer than the "
                            "learning-rate schedule (config.train_steps=3): warming up over "
                            "all 3 steps instead"]
        assert float(learning_rate_schedule(settings)(3)) == pytest.approx(config.learning_rate)
    else:  # a schedule longer than the run (schedule_steps) keeps its warmup
        assert settings.warmup_steps == shipped.warmup_steps and warnings == []


def test_tiny_is_among_the_configs_whose_warmup_is_clamped():
    tiny = cli.load_config(TINY)
    assert tiny.schedule_steps == 0 and tiny.warmup_steps > 3


def test_the_front_door_defines_no_flags_at_import():
    assert "print_config" not in flags.FLAGS


def _pretrain(*args):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.run([sys.executable, "-m", "bert.pretrain", "--config", TINY, *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_pretrain_command_stops_a_typo_with_status_2_and_no_traceback(tmp_path):
    done = _pretrain(f"--workdir={tmp_path}", "--config.model.num_heads=4",
                     "--config.learning_rat=0.1")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == ("bert.pretrain: error: unknown config key "
                                            "config.learning_rat (did you mean config.learning_rate?)")
    assert not os.listdir(tmp_path)


def test_pretrain_command_prints_its_config_without_a_workdir():
    done = _pretrain("--config.model.num_heads=4", "--print_config")
    assert done.returncode == 0, done.stderr[-2000:]
    keys = [line.split()[0] for line in done.stdout.splitlines()]
    assert keys == [f"config.{key}" for key in cli.key_meanings(pretraining_config)]
    assert re.search(r"^config\.model\.num_heads +4 +# attention heads", done.stdout, re.M)
