"""benchmarks.step and the fine-tuning tasks of benchmarks.finetune: the FLOP count, the flags
workers get, and the JSON a real (tiny) run writes."""
import json
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import finetune, step


def test_model_flops_match_a_hand_count_of_bert_base():
    b, s, layers, h, v, p = 8, 128, 12, 768, 30522, 20
    # Per token and layer: QKV 3·H², attention output H², MLP 2·4·H² -> 12·H² multiply-adds,
    # plus the pooler's H²; scores and context 2·S·H per layer; MLM head H² + H·V per
    # prediction. Two FLOPs per multiply-add, times three for forward + backward.
    encoder = b * s * (layers * (3 * h * h + h * h + 8 * h * h) + h * h)
    attention = b * s * layers * 2 * s * h
    head = b * p * (h * h + h * v)
    expected = 2 * 3 * (encoder + attention + head)
    assert step.model_flops_per_step(b, s, layers, h, v, p) == expected
    assert step.model_flops_per_step(b, s, layers, h, v, p) == pytest.approx(563.03e9, rel=1e-4)


def test_workers_get_every_flag_but_the_parents_own():
    args = ["--config", "c.py", "--vs", "torch", "--output=o.json", "--steps=2", "--vs=hf_flax",
            "--output", "x.json", "--ablations", "bf16", "--repeats", "3", "--ablations=no_donate",
            "--allocator", "system", "--allocator=tuned"]
    assert step.worker_args(args) == ["--config", "c.py", "--steps=2", "--repeats", "3"]


def test_full_mlm_head_ablation_has_the_same_loss():
    """Gathering every position (weight 0 off the masked ones) is the peers' decoder over all
    positions: more work, the same loss."""
    import jax
    import jax.numpy as jnp

    from bert import train
    from bert.model import BertConfig, BertForPreTraining, init_params

    s = dict(batch_size=2, seq_len=16, predictions=3, vocab_size=99)
    batch = step.synthetic_batch(s)
    everything = step.all_positions(batch)
    assert everything["masked_lm_positions"].shape == (2, 16)
    assert everything["masked_lm_weights"].sum() == batch["masked_lm_weights"].sum()
    model = BertForPreTraining(BertConfig.from_preset("tiny", vocab_size=99))
    params = init_params(model, jax.random.key(0))
    loss_fn = train.make_loss_fn(train.PretrainingTask(model, 1.0))
    one = jnp.float32(1.0)
    loss, sums = loss_fn(params, batch, None, (one, one))
    loss_all, sums_all = loss_fn(params, everything, None, (one, one))
    assert float(loss_all) == pytest.approx(float(loss), rel=1e-5)
    assert float(sums_all["mlm_count"]) == float(sums["mlm_count"]) == 6


def test_a_tiny_run_writes_the_documented_json(tmp_path):
    output = tmp_path / "bench.json"
    command = [sys.executable, "-m", "benchmarks.step", "--config", "experiments/pretrain/tiny.py",
               "--seq_len", "32", "--batch_size", "2", "--steps", "2", "--warmup_steps", "0",
               "--repeats", "2", "--ablations", "system_allocator", "--allocator", "tuned",
               "--output", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["complete"] is True and report["errors"] == {}
    assert not output.with_name("bench.json.partial").exists()
    assert report["peak_flops"] == max(report["peak_flops_by_impl"].values()) > 0
    result, system = report["results"]
    assert report["machine"]["backend"] == "cpu" and report["machine"]["cores"] >= 1
    # Every worker reports the allocator it ran under: the tuned one unless the variant opts out.
    assert result["impl"] == "bert-jax" and result["allocator"] == "tuned"
    assert system["impl"] == "bert-jax/system_allocator" and system["allocator"] == "system"
    assert result["page_faults_per_step"] >= 0
    assert system["steps_timed"] == 4 and "bert-jax/system_allocator" in done.stdout
    assert result["steps_timed"] == 4 and len(result["step_ms_round_medians"]) == 2
    assert result["tokens_per_sec"] == pytest.approx(2 * 32 / (result["step_ms"] / 1e3))
    assert result["mfu"] == pytest.approx(
        result["model_flops_per_step"] / (result["step_ms"] / 1e3) / report["peak_flops"])
    assert result["config"]["seq_len"] == 32 and result["config"]["predictions"] == 5
    assert result["peak_memory_bytes"] > 0
    assert "bert-jax" in done.stdout and "tokens/s" in done.stdout


def test_a_failing_peer_keeps_the_rows_measured(tmp_path):
    """The test environment's transformers has no Flax models, so the hf_flax worker fails at
    import: the run says so (exit status, `errors`) and still writes bert-jax's row."""
    try:
        from transformers import FlaxBertForPreTraining  # noqa: F401
        pytest.skip("this environment can run the hf_flax peer")
    except ImportError:
        pass
    output = tmp_path / "bench.json"
    command = [sys.executable, "-m", "benchmarks.step", "--config", "experiments/pretrain/tiny.py",
               "--seq_len", "16", "--batch_size", "2", "--steps", "1", "--warmup_steps", "0",
               "--vs", "hf_flax", "--output", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "failed: hf_flax" in done.stderr
    report = json.loads(output.read_text())
    assert report["complete"] is False
    assert [r["impl"] for r in report["results"]] == ["bert-jax"]
    assert "FlaxBertForPreTraining" in report["errors"]["hf_flax"]
    assert "bert-jax" in done.stdout and "tokens/s" in done.stdout


def test_finetuning_flops_match_a_hand_count_of_bert_base():
    b, s, layers, h = 32, 128, 12, 768
    # The encoder as in pretraining (12·H² per token and layer, 2·S·H for scores and context),
    # without the MLM transform; the classifier adds the pooler (H²) and H·2 logits per row,
    # the span head H·2 per token.
    encoder = b * s * layers * (12 * h * h + 2 * s * h)
    assert finetune.flops_per_step("classify", b, s, layers, h, 2) == \
        6 * (encoder + b * (h * h + 2 * h))
    assert finetune.flops_per_step("squad", b, s, layers, h) == 6 * (encoder + b * s * 2 * h)
    assert finetune.flops_per_step("classify", b, s, layers, h) == pytest.approx(
        2.146e12, rel=1e-3)


def test_finetuning_batches_carry_each_heads_targets_under_the_peers_names():
    s = dict(batch_size=8, seq_len=32, vocab_size=99, num_labels=3)
    classify = step.synthetic_batch(dict(s, task="classify"))
    assert classify["label_ids"].shape == (8,) and set(classify["label_ids"]) <= {0, 1, 2}
    assert classify["input_mask"].all() and classify["example_weights"].tolist() == [1.0] * 8
    assert step.hf_labels("classify", classify) == {"labels": classify["label_ids"]}
    squad = step.synthetic_batch(dict(s, task="squad"))
    starts, ends = squad["start_positions"], squad["end_positions"]
    # Answers lie in the second segment (the context), end at or after their start.
    assert (squad["segment_ids"][np.arange(8), starts] == 1).all()
    assert (starts <= ends).all() and (ends < 32).all()
    assert set(step.hf_labels("squad", squad)) == {"start_positions", "end_positions"}
    pretrain = step.synthetic_batch(dict(s, predictions=4))
    labels = step.hf_labels("pretrain", pretrain)["labels"]
    assert (labels != -100).sum() == 8 * 4
    assert (np.take_along_axis(labels, pretrain["masked_lm_positions"], 1)
            == pretrain["masked_lm_ids"]).all()


@pytest.mark.parametrize("task, peers", [("classify", ["--vs", "torch"]), ("squad", [])])
def test_a_tiny_finetuning_run_writes_the_documented_json(tmp_path, task, peers):
    output = tmp_path / "bench.json"
    command = [sys.executable, "-m", "benchmarks.step", "--config", "experiments/pretrain/tiny.py",
               "--task", task, "--seq_len", "32", "--batch_size", "2", "--steps", "2",
               "--warmup_steps", "0", *peers, "--output", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["task"] == task and report["complete"] is True
    assert [r["impl"] for r in report["results"]] == ["bert-jax", *peers[1:]]
    for result in report["results"]:
        config = result["config"]
        assert config["task"] == task and config["seq_len"] == 32 and config["batch_size"] == 2
        assert result["steps_timed"] == 2
        assert result["tokens_per_sec"] == pytest.approx(2 * 32 / (result["step_ms"] / 1e3))
        assert result["model_flops_per_step"] == finetune.flops_per_step(
            task, 2, 32, config["num_layers"], config["hidden_size"])
        assert result["mfu"] == pytest.approx(
            result["model_flops_per_step"] / (result["step_ms"] / 1e3) / report["peak_flops"])
    assert ("num_labels" in report["results"][0]["config"]) == (task == "classify")
    assert "tokens/s" in done.stdout


def test_evaluation_of_real_sentences_against_fixed_length(tmp_path):
    """bert-jax's evaluation (length buckets, sorted) and the same padded to max_seq_len run
    the same sentences; only the tokens computed differ."""
    output = tmp_path / "bench.json"
    command = [sys.executable, "-m", "benchmarks.step", "--config", "experiments/pretrain/tiny.py",
               "--task", "eval", "--ablations", "fixed_length", "--seq_len", "32",
               "--batch_size", "4", "--steps", "2", "--warmup_steps", "0",
               "--eval_files", "data/sotu/eval/1985_*.txt", "--eval_sentences", "10",
               "--eval_tokenizer", "tests/fixtures/wordpiece", "--output", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())
    data = report["eval_data"]
    assert report["task"] == "eval" and report["tokenizer"] == "tests/fixtures/wordpiece"
    assert data["sentences"] == 10 and data["max_seq_len"] == 32
    assert data["tokens_mean"] <= data["tokens_max"] <= 32
    buckets, fixed = report["results"]
    assert (buckets["impl"], fixed["impl"]) == ("bert-jax", "bert-jax/fixed_length")
    assert buckets["buckets"] == [8, 16, 24, 32] and fixed["buckets"] == [32]
    for result in (buckets, fixed):
        assert result["sentences"] == 10 and result["steps_timed"] == 2
        assert result["sentences_per_sec"] == pytest.approx(10 / (result["step_ms"] / 1e3))
        real = result["tokens_per_sec"] * result["step_ms"] / 1e3
        assert real == pytest.approx(data["tokens_mean"] * 10)
    # 10 rows in batches of 4: three batches, the last padded; all 32 tokens long without buckets.
    assert fixed["computed_tokens_per_sec"] * fixed["step_ms"] / 1e3 == pytest.approx(3 * 4 * 32)
    assert buckets["padding_fraction"] < fixed["padding_fraction"]
    assert fixed["padding_fraction"] == pytest.approx(1 - data["tokens_mean"] * 10 / (3 * 4 * 32))
    assert report["eval_speedup"] == pytest.approx(
        buckets["sentences_per_sec"] / fixed["sentences_per_sec"])
    assert "sentences/s" in done.stdout


@pytest.mark.parametrize("flags, message", [
    (["--task", "eval", "--vs", "torch"], "--task eval measures bert-jax alone"),
    (["--task", "classify", "--ablations", "full_mlm_head"], "do not apply to --task classify"),
])
def test_flags_that_do_not_fit_the_task_are_refused(flags, message):
    command = [sys.executable, "-m", "benchmarks.step", "--config", "experiments/pretrain/tiny.py",
               *flags]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and message in done.stderr
