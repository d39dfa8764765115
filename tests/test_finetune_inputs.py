"""What `python -m bert.finetune` checks before its first step, and what it never overwrites.

Bad inputs end in one line naming the file (line, key) and exit status 2 or 1 before anything
is written; a work directory holding another run is refused with the differing keys and both
values, and left byte for byte as it was; the same command resumes; `config.overwrite` moves
the old run aside. Readers take a UTF-8 byte-order mark and CRLF line ends. A Hugging Face
folder is a model to start from, converted in memory exactly as `bert.convert from-hf` does.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from bert import checkpoint, cli, convert, files, pretrain, trainer
from bert.config import pretraining_config, validate
from bert.optim import OptimizerSettings
from bert.metrics import MetricsWriter
from bert.tasks import classification, multiple_choice, squad, tagging
from scripts.kill_resume import REPO, compare_runs, resumed_step, run_to_end, run_until
from tests.test_finetune import CONFIGS, FIXTURES, finetune_env, write_model_folder
from tests.test_finetune_cli import PREFIX, _check_one_line_error

SST2_TRAIN = "sentence\tlabel\n" + "".join(
    f"{text}\t{label}\n" for text, label in [("a good film", 1), ("a bad film", 0),
                                             ("good and fun", 1), ("dull and bad", 0)] * 2)
CLASSIFY_TRAIN = "text,label\n" + "".join(f"{t},{l}\n" for t, l in [
    ("the cat sat", "pos"), ("the dog ran", "neg"), ("a cat", "pos"), ("a dog", "neg")] * 2)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("finetune_inputs")


@pytest.fixture(scope="module")
def model(root) -> Path:
    return write_model_folder(root / "model")


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _finetune(root: Path, workdir: Path, task: str, *flags: str, model: Path | None = None
              ) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bert.finetune", "--config", str(CONFIGS / f"{task}.py"),
               f"--workdir={workdir}", "--config.max_seq_len=16", "--config.length_buckets=16",
               "--config.batch_size=4", "--config.log_every=1",
               *([f"--config.init_checkpoint={model}"] if model else []), *flags]
    return subprocess.run(command, cwd=REPO, env=finetune_env(root / "compile_cache"),
                          capture_output=True, text=True, timeout=300)


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` by its relative path, with a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- the work directory: one run, never overwritten by another ------------------------------

@pytest.fixture(scope="module")
def finished(root, model) -> dict:
    """A finished two-step sst2 run, and the flags that made it."""
    train = _write(root / "data" / "sst2_train.tsv", SST2_TRAIN)
    flags = [f"--config.train_file={train}", f"--config.eval_file={train}",
             "--config.num_train_epochs=1"]
    workdir = root / "sst2_run"
    done = _finetune(root, workdir, "sst2", *flags, model=model)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(workdir=workdir, flags=flags, snapshot=_snapshot(workdir))


def test_rerun_as_another_task_is_refused_naming_the_keys_and_changes_nothing(root, model,
                                                                            finished):
    other = _write(root / "data" / "other.csv", CLASSIFY_TRAIN)
    done = _finetune(root, finished["workdir"], "classify", f"--config.train_file={other}",
                     model=model)
    line = _check_one_line_error(done, ["run.json", "config.task: 'sst2' there, 'classify' now",
                                        "train_file:", "other.csv", "--config.overwrite=true"])
    assert "sst2_train.tsv (" in line
    assert _snapshot(finished["workdir"]) == finished["snapshot"]


def test_rerun_with_more_epochs_is_refused_naming_both_values(root, model, finished):
    done = _finetune(root, finished["workdir"], "sst2", *finished["flags"],
                     "--config.num_train_epochs=3", model=model)
    _check_one_line_error(done, ["config.num_train_epochs: 1.0 there, 3.0 now"])
    assert _snapshot(finished["workdir"]) == finished["snapshot"]


def test_the_same_command_resumes_and_rewrites_the_same_results(root, model, finished):
    done = _finetune(root, finished["workdir"], "sst2", *finished["flags"],
                     "--config.log_every=2", model=model)  # not part of the fingerprint
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from step 2" in done.stderr
    after = _snapshot(finished["workdir"])
    for name in ("eval_results.json", "eval_predictions.tsv", "task.json", "run.json",
                 "bert_config.json"):
        assert after[name] == finished["snapshot"][name], name


def test_overwrite_moves_the_old_run_aside_and_starts_over(root, model, finished):
    workdir = root / "overwritten"
    shutil.copytree(finished["workdir"], workdir)
    before = _snapshot(workdir)
    done = _finetune(root, workdir, "sst2", *finished["flags"], "--config.num_train_epochs=2",
                     "--config.overwrite=true", model=model)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed" not in done.stderr
    [moved] = root.glob("overwritten.replaced-*")
    assert _snapshot(moved) == before
    assert json.loads((workdir / "run.json").read_text())["config.num_train_epochs"] == 2.0
    assert json.loads((workdir / "eval_results.json").read_text())["train_steps"] == 4


def test_workdir_that_is_the_model_folder_is_refused_and_left_alone(root, model, finished):
    before = _snapshot(model)
    done = _finetune(root, model, "sst2", *finished["flags"], model=model)
    _check_one_line_error(done, [f"--workdir={model}", "config.init_checkpoint", "task.json"])
    done = _finetune(root, model / "params" / "run", "sst2", *finished["flags"], model=model)
    _check_one_line_error(done, ["config.init_checkpoint"])
    assert _snapshot(model) == before


def test_sigterm_then_the_same_command_ends_bit_identical_to_an_uninterrupted_run(root, model):
    header, rows = SST2_TRAIN.split("\n", 1)
    train = _write(root / "data" / "sst2_long.tsv", f"{header}\n{rows * 5}")  # 40 rows: 10 steps

    def command(workdir: Path) -> list[str]:
        return [sys.executable, "-m", "bert.finetune", "--config", str(CONFIGS / "sst2.py"),
                f"--workdir={workdir}", f"--config.init_checkpoint={model}",
                f"--config.train_file={train}", f"--config.eval_file={train}",
                "--config.max_seq_len=16", "--config.length_buckets=16", "--config.batch_size=4",
                "--config.log_every=1", "--config.num_train_epochs=1",
                "--config.checkpoint_every=100"]

    env = finetune_env(root / "compile_cache")
    reference, interrupted = root / "term_reference", root / "term_interrupted"
    run_to_end(command(reference), env)
    status, log = run_until(command(interrupted), env, interrupted, step=3,
                            signum=signal.SIGTERM, delay=0.0)
    assert status == 0 and "stopped after step" in log
    assert not (interrupted / "eval_results.json").exists()
    final_log = run_to_end(command(interrupted), env)
    assert resumed_step(final_log) >= 3
    assert compare_runs(reference, interrupted) == []
    results = [json.loads((run / "eval_results.json").read_text())
               for run in (reference, interrupted)]
    assert results[0] == results[1]


def test_workdir_below_or_beside_the_model_folder_is_accepted(model):
    from bert import finetune

    config = ConfigDict({"init_checkpoint": str(model), "overwrite": False})
    for workdir in (model / "finetune" / "sst2", model.parent / "sst2_beside"):
        finetune._check_workdir(config, str(workdir))  # make demo's layout: DIR/finetune/<task>
    config.overwrite = True
    with pytest.raises(ValueError, match="config.overwrite would move config.init_checkpoint"):
        finetune._check_workdir(config, str(model.parent))


def _pretraining_fingerprint(config):
    return pretrain.run_fingerprint(config, OptimizerSettings.from_config(config))


def test_pretraining_workdir_holding_another_run_is_refused_before_any_work(tmp_path):
    config = cli.load_config("experiments/pretrain/base.py",
                             ["--config.data.train_files=corpus/*.txt"])
    validate(config)
    trainer.record_run(config, str(tmp_path), _pretraining_fingerprint(config))
    before = _snapshot(tmp_path)
    command = [sys.executable, "-m", "bert.pretrain", "--config", "experiments/pretrain/base.py",
               f"--workdir={tmp_path}", "--config.data.train_files=corpus/*.txt",
               "--config.learning_rate=3e-4"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "config.learning_rate: 0.0001 there, 0.0003 now" in done.stderr.splitlines()[-1]
    assert _snapshot(tmp_path) == before


def test_pretraining_fingerprint_lets_phase_two_continue_and_overwrite_keep_the_data(tmp_path):
    config = pretraining_config()
    config.data.train_files = "corpus/*.txt"
    config.schedule_steps = 1000
    trainer.record_run(config, str(tmp_path), _pretraining_fingerprint(config))
    _write(tmp_path / "data" / "summary.json", "{}")
    phase_two = config.copy_and_resolve_references()
    phase_two.max_seq_len, phase_two.max_predictions_per_seq, phase_two.train_steps = 512, 80, 999
    trainer.claim_workdir(str(tmp_path), _pretraining_fingerprint(phase_two), overwrite=False)
    longer = config.copy_and_resolve_references()
    longer.schedule_steps = 2000  # a longer learning-rate horizon is another trajectory
    with pytest.raises(ValueError, match="lr_horizon_steps: 1000 there, 2000 now"):
        trainer.claim_workdir(str(tmp_path), _pretraining_fingerprint(longer), overwrite=False)
    trainer.claim_workdir(str(tmp_path), _pretraining_fingerprint(longer), overwrite=True,
                          keep=("data",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    [moved] = tmp_path.parent.glob(f"{tmp_path.name}.replaced-*")
    assert sorted(p.name for p in moved.iterdir()) == ["experiment_config.json", "run.json"]


# --- every input checked before the first step ------------------------------------------------

def _larger_vocabulary(root: Path, model: Path) -> Path:
    folder = root / "big_vocab_model"
    if not folder.exists():
        shutil.copytree(model, folder)
        vocab = folder / "tokenizer" / "vocab.txt"
        vocab.write_text(vocab.read_text() + "".join(f"extra{i}\n" for i in range(50)))
    return folder


def _squad_with_wrong_starts(path: Path) -> Path:
    data = json.loads((FIXTURES / "squad_v1_train.json").read_text())
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                for answer in qa["answers"]:
                    answer["answer_start"] = 0 if answer["answer_start"] else 1
    return _write(path, json.dumps(data))


MNLI_HEADER = "\t".join(["index", "promptID", "pairID", "genre", "s1bp", "s2bp", "s1p", "s2p",
                         "sentence1", "sentence2", "label1", "gold_label"])

# (task, files {flag: (name, text, bytes or a writer)}, other flags, what the one line names)
CASES = {
    "max_seq_len beyond the position table": (
        "sst2", {"train_file": ("t.tsv", SST2_TRAIN)}, ["--config.max_seq_len=128"],
        ["config.max_seq_len=128", "max_position_embeddings=64", "bert_config.json"]),
    "tokenizer larger than the embedding": (
        "sst2", {"train_file": ("t.tsv", SST2_TRAIN)}, ["BIG_VOCAB"],
        ["big_vocab_model", "tokens but the embedding table", "rows"]),
    "STS-B label nan": (
        "stsb", {"train_file": ("stsb.tsv", "index\tgenre\tfilename\tyear\told_index\tsource1\t"
                                "source2\tsentence1\tsentence2\tscore\n"
                                "0\tg\tf\t2012\t0\ts\ts\ta cat\ta dog\t3.5\n"
                                "1\tg\tf\t2012\t1\ts\ts\ta cat\ta cat\tnan\n")}, [],
        ["stsb.tsv:3", "'nan'", "not a finite number"]),
    "header-only eval file": (
        "sst2", {"train_file": ("t.tsv", SST2_TRAIN), "eval_file": ("dev.tsv", "sentence\tlabel\n")},
        [], ["dev.tsv", "config.eval_file", "empty or has only a header"]),
    "empty test file": (
        "sst2", {"train_file": ("t.tsv", SST2_TRAIN), "test_file": ("test.tsv", "")},
        [], ["test.tsv", "config.test_file", "no usable examples"]),
    "MNLI config given an SST-2 file": (
        "mnli", {"train_file": ("sst2_for_mnli.tsv", SST2_TRAIN)}, [],
        ["sst2_for_mnli.tsv", "all 8 records were skipped", "11 tab-separated fields",
         "sst2_for_mnli.tsv:2, 2 fields"]),
    "SQuAD file whose every answer_start is wrong": (
        "squad_v1", {"train_file": ("wrong_starts.json", _squad_with_wrong_starts)},
        ["--config.max_seq_len=64", "--config.length_buckets=64", "--config.max_query_length=16",
         "--config.doc_stride=16"],
        ["wrong_starts.json", "records were skipped", "not found at their answer_start",
         "first: "]),
    "eval_every without an eval file": (
        "sst2", {"train_file": ("t.tsv", SST2_TRAIN)}, ["--config.eval_every=5"],
        ["config.eval_every", "config.eval_file"]),
    "not UTF-8": (
        "classify", {"train_file": ("latin.csv", "text,label\ncaf\xe9,pos\nok,neg\n".encode("latin-1"))},
        [], ["latin.csv:2", "byte 0xe9 at byte offset 14", "column 4", "encoding"]),
    "empty classify train file": (
        "classify", {"train_file": ("empty.csv", "text,label\n")}, [],
        ["empty.csv", "no examples"]),
    "classify train file with one label": (
        "classify", {"train_file": ("one.csv", "text,label\na,pos\nb,pos\n")}, [],
        ["one.csv", "'label'", "['pos']"]),
    "classify file without the text column": (
        "classify", {"train_file": ("cols.csv", "sentence,label\na,pos\nb,neg\n")}, [],
        ["cols.csv:2", "no text field 'text'", "'sentence', 'label'"]),
    "SQuAD question budget leaving no context": (
        "squad_v1", {"train_file": ("q.json", _squad_with_wrong_starts)},
        ["--config.max_seq_len=64", "--config.length_buckets=64"],
        ["config.max_query_length", "config.max_seq_len=64"]),
    "neither a model folder nor a Hugging Face folder": (
        "sst2", {"train_file": ("t.tsv", SST2_TRAIN)}, ["NOT_A_MODEL"],
        ["bert_config.json", "config.json", "model.safetensors", "vocab.txt"]),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_stops_before_training_in_one_line(root, model, tmp_path, case):
    task, inputs, flags, names = CASES[case]
    init = model
    if "BIG_VOCAB" in flags:
        init, flags = _larger_vocabulary(root, model), []
    if "NOT_A_MODEL" in flags:
        init, flags = _write(tmp_path / "not_a_model" / "vocab.txt", "[PAD]\n").parent, []
    for key, (name, content) in inputs.items():
        path = tmp_path / name
        content(path) if callable(content) else _write(path, content)
        flags = [*flags, f"--config.{key}={path}"]
    workdir = tmp_path / "run"
    _check_one_line_error(_finetune(root, workdir, task, *flags, model=init), names)
    assert not workdir.exists()


# --- readers: a byte-order mark and CRLF read as the plain file does --------------------------

BOM = "\ufeff"


def _bom_crlf(tmp_path: Path, source: Path | str, name: str) -> tuple[Path, Path]:
    text = source.read_text() if isinstance(source, Path) else source
    plain = _write(tmp_path / f"plain_{name}", text.replace("\r\n", "\n"))
    marked = _write(tmp_path / f"marked_{name}",
                    (BOM + text.replace("\r\n", "\n").replace("\n", "\r\n")).encode("utf-8"))
    return plain, marked


def test_byte_order_mark_and_crlf_read_as_the_plain_file_in_every_reader(tmp_path):
    table = "text,label\r\ngood film,pos\r\n\"bad, dull film\",neg\r\n"
    for fmt, text in (("csv", table), ("jsonl", '{"text": "good", "label": "pos"}\n')):
        plain, marked = _bom_crlf(tmp_path, text, f"t.{fmt}")
        read = [classification.read_table(p, text="text", label="label") for p in (plain, marked)]
        assert read[0] == read[1] and read[0]
    for task, layout in (("sst2", "SST-2/dev.tsv"), ("cola", "CoLA/train.tsv")):
        split = "train" if "train" in layout else "dev"
        plain, marked = _bom_crlf(tmp_path, FIXTURES / "glue" / layout, f"{task}.tsv")
        read = [classification.read_glue(p, task, split) for p in (plain, marked)]
        assert read[0] == read[1] and read[0][0]
    conll = "-DOCSTART- -X- O O\n\nEU B-ORG\nrejects O\n\n-DOCSTART- -X- O O\n\nPeter B-PER\n"
    plain, marked = _bom_crlf(tmp_path, conll, "t.conll")
    read = [tagging.read_conll(p) for p in (plain, marked)]
    assert read[0] == read[1] and [s.words for s in read[0]] == [("EU", "rejects"), ("Peter",)]
    assert [s.document for s in read[0]] == [0, 1]
    plain, marked = _bom_crlf(tmp_path, FIXTURES / "squad_v1_train.json", "squad.json")
    read = [squad.read_squad(p, is_training=True, version_2_with_negative=False)
            for p in (plain, marked)]
    assert read[0] == read[1] and read[0].examples
    swag = next((FIXTURES / "swag").glob("*.csv"))
    plain, marked = _bom_crlf(tmp_path, swag, "swag.csv")
    read = [multiple_choice.read_swag(p) for p in (plain, marked)]
    assert read[0] == read[1] and read[0]


# --- a Hugging Face folder as init_checkpoint -------------------------------------------------

def test_hugging_face_folder_is_converted_in_memory_exactly_as_from_hf(root, model, tmp_path):
    hf_dir = tmp_path / "hf"
    convert.export_hf(str(model), str(hf_dir))
    opened = convert.open_pretrained(str(hf_dir))
    convert.import_hf(str(hf_dir), str(tmp_path / "imported"))
    written = checkpoint.load_params(str(tmp_path / "imported"))
    flat = lambda tree: {jax.tree_util.keystr(k): np.asarray(v)  # noqa: E731
                         for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
    ours, theirs = flat(opened.params()), flat(written)
    assert ours.keys() == theirs.keys()
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    assert opened.config == checkpoint.read_model_config(str(tmp_path / "imported"))
    assert opened.tokenizer.vocab_size == opened.config.vocab_size
    assert opened.location == str(hf_dir)


def test_hugging_face_folder_fine_tunes_without_conversion(root, model, finished, tmp_path):
    hf_dir = tmp_path / "hf"
    convert.export_hf(str(model), str(hf_dir))
    workdir = tmp_path / "from_hf"
    done = _finetune(root, workdir, "sst2", *finished["flags"], model=hf_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "converted in memory" in done.stderr
    assert json.loads((workdir / "eval_results.json").read_text())["train_steps"] == 2
    assert sorted(p.name for p in hf_dir.iterdir()) == sorted(
        ["config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"])


# --- strict JSON --------------------------------------------------------------------------------

def test_metrics_and_results_are_strict_json_with_null_for_non_finite(tmp_path):
    writer = MetricsWriter(str(tmp_path))
    writer.write(1, {"loss": float("nan"), "grad_norm": float("inf"), "accuracy": 0.5})
    writer.close()
    line = (tmp_path / "metrics.jsonl").read_text()
    assert json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c}")) == {
        "step": 1, "loss": None, "grad_norm": None, "accuracy": 0.5}
    text = files.strict_json({"pearson": math.nan, "runs": [{"f1": -math.inf}], "n": 3})
    assert json.loads(text) == {"pearson": None, "runs": [{"f1": None}], "n": 3}
