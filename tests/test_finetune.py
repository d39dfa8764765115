"""Fine-tuning end to end: every experiments/finetune config on fixtures in the real formats.

A tiny model folder (hidden 32, 2 layers, the fixture WordPiece vocabulary) is fine-tuned a few
steps by `bert.finetune.finetune` for each config, and the files the command contract names
are checked: eval_results.json (metric names and scales), eval_predictions and
test_predictions in the task's customary format (GLUE leaderboard names too), metrics.jsonl,
experiment_config.json and checkpoints. Also: a separable task is learnt, a run killed with
SIGKILL ends bit-identical to an uninterrupted one, seeds/lr_grid runs are summarised and not
redone, pmap and jit take the same steps, and evaluation counts every example once.

All runs share one process on one CPU device with a persistent compilation cache: configs of a
family compile the same programs, so only the first of them pays for compilation.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import logging
import os
import random
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from bert import checkpoint
from bert.metrics import read_metrics
from bert.model import BertConfig, BertForPreTraining, init_params
from bert.tasks import batches, classification, registry, squad, tagging
from bert.tokenizer import load_tokenizer
from scripts.kill_resume import (FIRST_STEP_MARK, REPO, compare_runs, pretrain_env, resumed_step,
                                 run_to_end, run_until)

FIXTURES = Path(__file__).parent / "fixtures"
GLUE = FIXTURES / "glue"
CONFIGS = REPO / "experiments" / "finetune"
TOKENIZER = FIXTURES / "wordpiece"
BATCH = 4
SEQ = 32
QA_SEQ = 64


# --- shared helpers (tests/test_finetune_cli.py uses them too) ---------------------------------

def write_model_folder(folder: Path) -> Path:
    """A tiny pretrained-model folder: config, the fixture WordPiece tokenizer, random params."""
    tokenizer = load_tokenizer(TOKENIZER)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_layers=2,
                        num_heads=2, intermediate_size=64, max_position_embeddings=QA_SEQ)
    params = jax.device_get(jax.jit(lambda k: init_params(BertForPreTraining(config), k))(
        jax.random.key(0)))
    checkpoint.write_model_description(str(folder), config, tokenizer)
    checkpoint.save_params(str(folder), params)
    return folder


def finetune_env(compile_cache: Path) -> dict[str, str]:
    """One CPU device, optimisation level 0 and a persistent compilation cache shared by every
    run of the tests (scripts/kill_resume.py's environment)."""
    return pretrain_env(compile_cache)


def load_config(name: str, overrides: dict[str, Any]) -> ConfigDict:
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.update_from_flattened_dict(overrides)
    return config


def _drive(jobs_file: str) -> None:
    """Runs bert.finetune.finetune for each job of `jobs_file` (a JSON list of {name, config,
    workdir, overrides}); a job that raises leaves its traceback in WORKDIR/error.txt."""
    from bert import finetune
    from bert.metrics import setup_logging

    setup_logging()
    for job in json.loads(Path(jobs_file).read_text()):
        workdir = Path(job["workdir"])
        logging.info("job %s: %s", job["name"], workdir)
        try:
            finetune.finetune(load_config(job["config"], job["overrides"]), str(workdir))
        except Exception:  # noqa: BLE001 - reported by the test that reads this job
            workdir.mkdir(parents=True, exist_ok=True)
            (workdir / "error.txt").write_text(traceback.format_exc())


def run_jobs(jobs: list[dict[str, Any]], root: Path, env: dict[str, str]) -> str:
    """All `jobs` in one subprocess (one device, the shared compilation cache); its log."""
    jobs_file = root / f"jobs_{len(list(root.glob('jobs_*.json')))}.json"
    jobs_file.write_text(json.dumps(jobs))
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from tests.test_finetune import _drive; "
         "_drive(sys.argv[1])", str(jobs_file)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stderr


def two_steps(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` with the num_train_epochs that makes two steps of the training file's rows:
    every run of a family then has the same learning-rate schedule, so its programs compile once
    for all of them."""
    config = load_config(name, overrides)
    family = registry.family(config, load_tokenizer(TOKENIZER))
    family.set_labels(config.train_file)
    rows = len(family.load("train", config.train_file).features["input_ids"])
    return {**overrides, "num_train_epochs": 2.5 * config.batch_size / rows}


def _small(max_seq_len: int = SEQ) -> dict[str, Any]:
    return {"max_seq_len": max_seq_len, "length_buckets": str(max_seq_len), "batch_size": BATCH,
            "log_every": 1}


# --- what each config runs on, and what it must write -----------------------------------------

def _write_rte(path: Path) -> Path:
    """RTE's train/dev layout (index, sentence1, sentence2, label): the fixtures hold its test."""
    rows = [("0", "The cat sat on the mat.", "A cat sat.", "entailment"),
            ("1", "The dog was not good.", "The dog was good.", "not_entailment"),
            ("2", "He said hello there.", "He said hello.", "entailment"),
            ("3", "Japan won against China.", "China won.", "not_entailment")]
    path.write_text("index\tsentence1\tsentence2\tlabel\n"
                    + "".join("\t".join(r) + "\n" for r in rows))
    return path


def _job(task: str, train: Path, *, metrics: tuple[str, ...], ext: str, scale: float = 1.0,
         submissions: tuple[str, ...] = (), seq: int = SEQ, **files: Any) -> dict[str, Any]:
    """A run of config `task` trained and scored on `train`, with the other files and keys."""
    overrides = {**_small(seq), "train_file": str(train), "eval_file": str(train),
                 **{key.replace("__", "."): str(v) if isinstance(v, Path) else v
                    for key, v in files.items()}}
    return dict(config=task, overrides=two_steps(task, overrides), metrics=metrics, scale=scale,
                ext=ext, submissions=submissions)


def _glue(task: str, train: Path, **kwargs: Any) -> dict[str, Any]:
    return _job(task, train, ext="tsv", **kwargs)


def _classify(path: Path, metrics: tuple[str, ...], **reader: Any) -> dict[str, Any]:
    return _job("classify", path, ext="tsv", metrics=metrics, test_file=path,
                **{f"reader__{k}": v for k, v in reader.items()})


def _tagging(task: str, path: Path) -> dict[str, Any]:
    return _job(task, path, ext="conll", metrics=("precision", "recall", "f1"), test_file=path)


def _squad(task: str, path: Path, metrics: tuple[str, ...]) -> dict[str, Any]:
    return _job(task, path, ext="json", metrics=metrics, scale=100.0, seq=QA_SEQ,
                test_file=path, doc_stride=16, max_query_length=16)


V2_METRICS = ("exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total",
              "NoAns_exact", "NoAns_f1", "NoAns_total", "best_exact", "best_exact_thresh",
              "best_f1", "best_f1_thresh")


def config_jobs(data: Path) -> dict[str, dict[str, Any]]:
    """One job per experiments/finetune config (three for classify: CSV in Latin-1, JSONL,
    headerless TSV regression)."""
    rte = _write_rte(data / "rte_train.tsv")
    return {
        "cola": _glue("cola", GLUE / "CoLA/train.tsv", test_file=GLUE / "CoLA/test.tsv",
                      metrics=("matthews_corr", "accuracy"), submissions=("CoLA.tsv",)),
        "sst2": _glue("sst2", GLUE / "SST-2/dev.tsv", metrics=("accuracy",)),
        "mrpc": _glue("mrpc", GLUE / "MRPC/train.tsv", test_file=GLUE / "MRPC/test.tsv",
                      metrics=("accuracy", "f1"), submissions=("MRPC.tsv",)),
        "qqp": _glue("qqp", GLUE / "QQP/train.tsv", test_file=GLUE / "QQP/test.tsv",
                     metrics=("accuracy", "f1"), submissions=("QQP.tsv",)),
        "stsb": _glue("stsb", GLUE / "STS-B/dev.tsv", test_file=GLUE / "STS-B/test.tsv",
                      metrics=("pearson", "spearman"), submissions=("STS-B.tsv",)),
        "mnli": _glue("mnli", GLUE / "MNLI/train.tsv", test_file=GLUE / "MNLI/test_matched.tsv",
                      metrics=("accuracy", "accuracy_mm"),
                      submissions=("MNLI-m.tsv", "MNLI-mm.tsv"),
                      eval_mismatched_file=GLUE / "MNLI/dev_mismatched.tsv",
                      test_mismatched_file=GLUE / "MNLI/test_matched.tsv"),
        "qnli": _glue("qnli", GLUE / "QNLI/dev.tsv", metrics=("accuracy",)),
        "rte": _glue("rte", rte, test_file=GLUE / "RTE/test.tsv", metrics=("accuracy",),
                     submissions=("RTE.tsv",)),
        "wnli": _glue("wnli", GLUE / "WNLI/train.tsv", metrics=("accuracy",)),
        "classify_latin1_csv": _classify(
            FIXTURES / "classify/reviews_latin1.csv", ("accuracy", "f1", "matthews_corr"),
            encoding="latin-1", text_column="review", label_column="label", index_column="id"),
        "classify_jsonl": _classify(
            FIXTURES / "classify/questions.jsonl", ("accuracy",), text_column="question",
            pair_column="context", label_column="label"),
        "classify_regression_tsv": _classify(
            FIXTURES / "classify/scores.tsv", ("pearson", "spearman"), header=False,
            text_column="0", pair_column="1", label_column="2", regression=True),
        "ner": _tagging("ner", FIXTURES / "conll/iob2.txt"),
        "tag": _tagging("tag", FIXTURES / "conll/iob1.txt"),
        "squad_v1": _squad("squad_v1", FIXTURES / "squad_v1_train.json", ("exact_match", "f1")),
        "squad_v2": _squad("squad_v2", FIXTURES / "squad_v2_dev.json", V2_METRICS),
        "swag": _job("swag", FIXTURES / "swag/val.csv", ext="csv", metrics=("accuracy",),
                     test_file=FIXTURES / "swag/test.csv"),
    }


# --- a separable task, an uneven dev set, restarts ---------------------------------------------

WORDS = ("the a man dog is was good bad movie film it not hello there play great and of in he "
         "said quick brown fox jump over lazy japan china won lost against cup match").split()


def _write_separable(path: Path, rows: int, seed: int) -> None:
    """Sentences of random words; label 1 exactly when "cat" occurs in it."""
    rng = random.Random(seed)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "text", "label"])
        for i in range(rows):
            words = rng.choices(WORDS, k=rng.randint(3, 8))
            label = i % 2
            if label:
                words.insert(rng.randrange(len(words) + 1), "cat")
            out.writerow([f"s{i}", " ".join(words), label])


def extra_jobs(data: Path, sst2: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The learning, seeds and select_on_dev runs (sst2: its config job's overrides, so that
    those runs share its compiled programs), and the seeds run again."""
    train, dev = data / "cat_train.csv", data / "cat_dev.csv"
    _write_separable(train, 64, seed=1)
    _write_separable(dev, DEV_ROWS, seed=2)
    select = {**sst2, "select_on_dev": True, "eval_every": 1}
    return {
        "learn": dict(config="classify", overrides=learn_overrides(data)),
        "seeds": dict(config="sst2", overrides={**sst2, "seeds": "1,2"}),
        "seeds_again": dict(config="sst2", overrides={**sst2, "seeds": "1,2"}, same_as="seeds"),
        "select": dict(config="sst2", overrides=select),
    }


DEV_ROWS = 30  # not a multiple of the batch: the last evaluation batch has 2 padded rows


def learn_overrides(data: Path) -> dict[str, Any]:
    """The separable task: 48 steps of 8 rows at a high learning rate, two length buckets."""
    return {"max_seq_len": 16, "length_buckets": "8,16", "batch_size": 8,
            "reader.text_column": "text", "reader.index_column": "id",
            "train_file": str(data / "cat_train.csv"), "eval_file": str(data / "cat_dev.csv"),
            "learning_rate": 3e-3, "num_train_epochs": 6.0, "dropout_rate": 0.0, "log_every": 8}


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("finetune")
    (root / "data").mkdir()
    return dict(root=root, model=write_model_folder(root / "model"),
                env=finetune_env(root / "compile_cache"))


@pytest.fixture(scope="module")
def runs(shared) -> dict[str, Any]:
    """Every job above, run once in one process (the seeds job twice)."""
    root, data = shared["root"], shared["root"] / "data"
    jobs = config_jobs(data)
    jobs.update(extra_jobs(data, jobs["sst2"]["overrides"]))
    for name, job in jobs.items():
        job["workdir"] = str(root / "runs" / job.get("same_as", name))
        job["name"] = name
        job["overrides"]["init_checkpoint"] = str(shared["model"])
    log = run_jobs(list(jobs.values()), root, shared["env"])
    return dict(jobs=jobs, log=log)


def _workdir(runs, name: str) -> Path:
    workdir = Path(runs["jobs"][name]["workdir"])
    error = workdir / "error.txt"
    assert not error.exists(), error.read_text()
    return workdir


def _results(workdir: Path) -> dict[str, Any]:
    return json.loads((workdir / "eval_results.json").read_text())


# --- 1. every config --------------------------------------------------------------------------

CONFIG_JOBS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli",
               "classify_latin1_csv", "classify_jsonl", "classify_regression_tsv", "ner", "tag",
               "squad_v1", "squad_v2", "swag")


# Configs run end to end elsewhere: the frozen-feature BiLSTM in tests/test_feature_probe.py,
# the demo's configs on the shipped sets in tests/test_demo_data.py and tests/test_demo.py.
RUN_ELSEWHERE = ("ner_features", "demo_sentiment", "demo_trec", "demo_wnut")


def test_every_config_file_has_a_job():
    configs = {p.stem for p in CONFIGS.glob("*.py")} - set(RUN_ELSEWHERE)
    assert configs == {name.split("_")[0] if name.startswith("classify") else name
                       for name in CONFIG_JOBS}


@pytest.mark.parametrize("name", CONFIG_JOBS)
def test_config_runs_and_writes_what_the_contract_names(runs, name):
    job, workdir = runs["jobs"][name], _workdir(runs, name)
    results = _results(workdir)
    config = json.loads((workdir / "experiment_config.json").read_text())
    assert config["task"] == job["config"]

    # Metrics: the task's names, in its scale; the final checkpoint was scored.
    for metric in job["metrics"]:
        value = results[metric]
        if metric.endswith(("total", "_thresh")):  # SQuAD v2 counts and null-odds thresholds
            assert isinstance(value, float)
            continue
        low = -1.0 if metric in ("matthews_corr", "pearson", "spearman") else 0.0
        assert low <= value <= job["scale"], (metric, value)
    assert results["step"] == results["train_steps"] >= 1
    assert results["checkpoint"] == f"final checkpoint (step {results['step']})"
    if job["scale"] == 100.0:  # SQuAD: exactly the official script's keys, nothing else
        assert {k for k, v in results.items() if isinstance(v, float)} == set(job["metrics"])

    # metrics.jsonl: a row per step with the loss; the last step's checkpoint.
    rows = [r for r in read_metrics(workdir / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, results["train_steps"] + 1))
    assert all(np.isfinite(r["loss"]) for r in rows)
    steps = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    assert max(steps) == results["train_steps"]
    assert (workdir / "task.json").exists() and (workdir / "bert_config.json").exists()

    _check_predictions(job, workdir, results)


def _tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def _check_predictions(job: dict[str, Any], workdir: Path, results: dict[str, Any]) -> None:
    o = job["overrides"]
    ext = job["ext"]
    evaluation = workdir / f"eval_predictions.{ext}"
    test = workdir / f"test_predictions.{ext}"
    assert test.exists() == bool(o.get("test_file")), sorted(os.listdir(workdir))
    if ext == "tsv":
        task = job["config"]
        examples = _classification_examples(job, o["eval_file"], "dev")
        rows = _tsv(evaluation)
        assert rows[0] == ["index", "prediction"]
        assert [r[0] for r in rows[1:]] == [e.guid for e in examples]
        assert results["eval_examples"] == len(examples)
        labels = json.loads((workdir / "task.json").read_text()).get("labels") or ()
        for _, prediction in rows[1:]:
            if labels:
                assert prediction in labels
            else:
                float(prediction)
        if task == "mnli":
            mismatched = _tsv(workdir / "eval_mismatched_predictions.tsv")
            assert len(mismatched) == 1 + results["eval_mismatched_examples"] == 1 + len(
                classification.read_glue(o["eval_mismatched_file"], "mnli", "dev")[0])
        for name, split in zip(job["submissions"], ("test", "test_mismatched")):
            # The GLUE leaderboard's file name, and the contract's test_predictions name.
            assert (workdir / name).read_text() == \
                (workdir / f"{split}_predictions.tsv").read_text()
            assert _tsv(workdir / name)[0] == ["index", "prediction"]
    elif ext == "conll":
        sentences = tagging.read_conll(o["eval_file"])
        blocks = [b for b in evaluation.read_text().split("\n\n") if b.strip()]
        assert len(blocks) == len(sentences)
        for block, sentence in zip(blocks, sentences):
            lines = [line.split(" ") for line in block.splitlines()]
            assert [line[:2] for line in lines] == [list(x) for x in zip(sentence.words,
                                                                         sentence.tags)]
            assert all(len(line) == 3 for line in lines)
    elif ext == "json":
        examples = squad.read_squad(o["eval_file"], is_training=False,
                                    version_2_with_negative=job["config"] == "squad_v2").examples
        answers = json.loads(evaluation.read_text())
        ids = {e.qas_id for e in examples}
        assert set(answers) == ids and all(isinstance(a, str) for a in answers.values())
        contexts = {e.qas_id: e.context for e in examples}
        assert all(a in contexts[i] for i, a in answers.items())
        odds = workdir / "eval_predictions.null_odds.json"
        assert odds.exists() == (job["config"] == "squad_v2")
        if odds.exists():
            null_odds = json.loads(odds.read_text())
            assert set(null_odds) == ids
            assert all(isinstance(v, float) for v in null_odds.values())
        assert set(json.loads(test.read_text())) == ids
    else:  # SWAG: id,label CSV
        rows = evaluation.read_text().splitlines()
        assert rows[0] == "id,label" and len(rows) == 1 + results["eval_examples"]
        assert all(r.split(",")[1] in "0123" for r in rows[1:])


def _classification_examples(job: dict[str, Any], path: str, split: str) -> list[Any]:
    if job["config"] != "classify":
        return classification.read_glue(path, job["config"], split)[0]
    o = job["overrides"]

    def column(key: str) -> Any:
        value = o.get(f"reader.{key}", "")
        return int(value) if str(value).isdigit() else value or None

    return classification.read_table(
        path, text=column("text_column"), pair=column("pair_column"),
        label=column("label_column") or "label", index=column("index_column"),
        encoding=o.get("reader.encoding", "utf-8"), header=o.get("reader.header", True),
        regression=o.get("reader.regression", False))


def test_short_glue_rows_are_skipped_and_counted(runs):
    """QQP's fixture (its train and dev file here) has a question broken over two lines, as the
    real train.tsv has: neither piece is a whole row."""
    results = _results(_workdir(runs, "qqp"))
    assert results["train_skipped"] == results["eval_skipped"] == 2
    assert results["train_examples"] == results["eval_examples"] == 2


def test_latin1_file_is_decoded_not_mangled(runs):
    workdir = _workdir(runs, "classify_latin1_csv")
    assert "r1\t" in (workdir / "eval_predictions.tsv").read_text()
    examples = _classification_examples(runs["jobs"]["classify_latin1_csv"],
                                        str(FIXTURES / "classify/reviews_latin1.csv"), "dev")
    assert "café" in examples[0].text_a


# --- 2. learning --------------------------------------------------------------------------------

def test_tiny_model_learns_a_separable_task_well_above_chance(runs):
    results = _results(_workdir(runs, "learn"))
    assert results["accuracy"] >= 0.9, results


# --- 4. restarts and selection ------------------------------------------------------------------

def test_seeds_run_separately_and_are_summarised_with_the_selected_predictions(runs):
    workdir = _workdir(runs, "seeds")
    lr = load_config("sst2", {}).learning_rate
    names = sorted(p.name for p in (workdir / "runs").iterdir())
    assert names == [f"lr{lr:g}_seed1", f"lr{lr:g}_seed2"]
    summary = _results(workdir)
    per_run = [_results(workdir / "runs" / n) for n in names]
    assert [(r["learning_rate"], r["seed"]) for r in summary["runs"]] == [(lr, 1), (lr, 2)]
    for run, result in zip(summary["runs"], per_run):
        assert run["metrics"]["accuracy"] == result["accuracy"]
    values = [r["accuracy"] for r in per_run]
    assert summary["mean"]["accuracy"] == pytest.approx(np.mean(values))
    assert summary["std"]["accuracy"] == pytest.approx(np.std(values))
    selected = Path(summary["selected"]["workdir"])
    assert summary["accuracy"] == _results(selected)["accuracy"] == max(values)
    assert (workdir / "eval_predictions.tsv").read_text() == \
        (selected / "eval_predictions.tsv").read_text()


def test_rerunning_seeds_redoes_no_finished_run(runs):
    _workdir(runs, "seeds")
    again = runs["log"].split("job seeds_again:", 1)[1].split("job select:", 1)[0]
    assert again.count("finished earlier, not redone") == 2
    assert "resumed from step" not in again and FIRST_STEP_MARK not in again


def test_select_on_dev_scores_and_names_the_step_it_selected(runs):
    workdir = _workdir(runs, "select")
    results = _results(workdir)
    best = json.loads((workdir / "best" / "best.json").read_text())
    assert results["step"] == best["step"]
    assert results["checkpoint"] == f"step {best['step']}, best on dev by accuracy"
    evaluations = [r for r in read_metrics(workdir / "metrics.jsonl") if "eval_accuracy" in r]
    assert [r["step"] for r in evaluations] == list(range(1, results["train_steps"] + 1))
    assert results["accuracy"] == max(r["eval_accuracy"] for r in evaluations)
    assert best["step"] == next(r["step"] for r in evaluations
                                if r["eval_accuracy"] == results["accuracy"])


# --- 7. length buckets and uneven evaluation ----------------------------------------------------

def _features(lengths: list[int], max_seq_len: int = 32) -> dict[str, np.ndarray]:
    mask = (np.arange(max_seq_len)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
    return dict(input_ids=mask * 7, segment_ids=np.zeros_like(mask), input_mask=mask,
                label_ids=np.arange(len(lengths), dtype=np.int32))


def test_training_batch_is_cut_to_the_smallest_bucket_holding_its_longest_row():
    lengths = [3, 9, 17, 5, 30, 8, 16, 12]
    features = _features(lengths)
    plan = batches.TrainPlan(num_rows=8, batch_size=2, num_epochs=2.0, seed=3,
                             buckets=(8, 16, 24, 32))
    seen = []
    for step, batch in enumerate(batches.train_batches(features, plan, start_step=0,
                                                       max_seq_len=32), start=1):
        rows = plan.global_rows(step)
        longest = max(lengths[r] for r in rows)
        expected = min(b for b in plan.buckets if b >= longest)
        assert batch["input_ids"].shape == (2, expected), (rows, longest)
        np.testing.assert_array_equal(batch["label_ids"], rows)
        np.testing.assert_array_equal(batch["input_mask"].sum(1), [lengths[r] for r in rows])
        seen.extend(rows.tolist())
    assert sorted(seen) == sorted(list(range(8)) * 2)  # two epochs, each row once per epoch


def test_evaluation_takes_every_row_once_and_pads_with_weight_zero():
    lengths = [3, 9, 17, 5, 30, 8, 16]
    features = _features(lengths)
    evaluated = list(batches.eval_batches(features, batch_size=4, buckets=(8, 16, 32),
                                          max_seq_len=32))
    real = np.concatenate([b.rows[b.rows >= 0] for b in evaluated])
    assert sorted(real.tolist()) == list(range(7))
    for b in evaluated:
        weights = b.host_batch["example_weights"]
        np.testing.assert_array_equal(weights, (b.rows >= 0).astype(np.float32))
        longest = max(lengths[r] for r in b.rows if r >= 0)
        assert b.host_batch["input_ids"].shape[1] == min(x for x in (8, 16, 32) if x >= longest)
    assert [int((b.rows < 0).sum()) for b in evaluated] == [0, 1]
    collected = [(b.rows, {"label_ids": b.host_batch["label_ids"]}) for b in evaluated]
    gathered = batches.gather_predictions(collected, 7)
    np.testing.assert_array_equal(gathered["label_ids"], np.arange(7))


def test_uneven_dev_set_is_scored_and_predicted_in_full(runs):
    """The learning run's dev set: 30 rows in batches of 8 over two length buckets."""
    workdir = _workdir(runs, "learn")
    results = _results(workdir)
    assert results["eval_examples"] == DEV_ROWS
    rows = _tsv(workdir / "eval_predictions.tsv")
    assert [r[0] for r in rows[1:]] == [f"s{i}" for i in range(DEV_ROWS)]
    # Accuracy over all 30 rows: a dropped, doubled or padded row would change it.
    correct = sum(p == str(i % 2) for i, (_, p) in enumerate(rows[1:]))
    assert results["accuracy"] == pytest.approx(correct / DEV_ROWS)


# --- 3. kill -9 and resume ----------------------------------------------------------------------

def test_killed_run_resumes_to_bit_identical_params_and_results(shared, runs):
    """The learning run's command (its programs are in the compilation cache) with a checkpoint
    every 2 steps, killed once step 8 is logged, then rerun as it was."""
    root = shared["root"]
    flags = {**learn_overrides(root / "data"), "init_checkpoint": shared["model"],
             "checkpoint_every": 2, "keep_checkpoints": 2}

    def command(workdir: Path) -> list[str]:
        return [sys.executable, "-m", "bert.finetune", "--config", str(CONFIGS / "classify.py"),
                f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in flags.items())]

    reference, interrupted = root / "resume_reference", root / "resume_interrupted"
    run_to_end(command(reference), shared["env"])
    status, log = run_until(command(interrupted), shared["env"], interrupted, step=8,
                            signum=signal.SIGKILL, delay=0.0)
    assert status == -signal.SIGKILL and FIRST_STEP_MARK in log
    assert (interrupted / "checkpoints").exists()
    final_log = run_to_end(command(interrupted), shared["env"])
    assert resumed_step(final_log) >= 2
    assert compare_runs(reference, interrupted) == []
    assert _results(reference) == _results(interrupted)
    assert (reference / "eval_predictions.tsv").read_text() == \
        (interrupted / "eval_predictions.tsv").read_text()


# --- 5. pmap and jit ---------------------------------------------------------------------------

def test_pmap_and_jit_finetuning_take_the_same_steps_on_eight_devices(shared, runs, tmp_path):
    """In this process (eight fake devices): the same run under both layouts, dropout off."""
    from bert import finetune

    assert jax.device_count() == 8
    data = shared["root"] / "data"
    losses = {}
    for parallelism in ("jit", "pmap"):
        config = load_config("classify", {
            **_small(16), "batch_size": 8, "train_file": str(data / "cat_train.csv"),
            "reader.text_column": "text", "init_checkpoint": str(shared["model"]),
            "num_train_epochs": 0.5, "learning_rate": 1e-3, "dropout_rate": 0.0,
            "parallelism": parallelism})
        finetune.finetune(config, str(tmp_path / parallelism))
        rows = read_metrics(tmp_path / parallelism / "metrics.jsonl")
        losses[parallelism] = [r["loss"] for r in rows]
    assert len(losses["jit"]) == 4
    np.testing.assert_allclose(losses["pmap"], losses["jit"], rtol=1e-5)
