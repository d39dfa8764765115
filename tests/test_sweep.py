"""bert.sweep: table configs expand into arms and commands, an interrupted sweep resumes without
redoing finished work, and the results carry the paper's columns. Commands run through a fake
runner that writes what the real ones would (checkpoints, metrics, eval_results.json)."""
import json
import os
import re

import pytest

from bert.ablations import results as sweep_results, sweep
from bert.ablations.results import AGREE, DISAGREE, NOISE, Cell

TABLE5 = "experiments/ablations/table5_tasks.py"
TABLES = ("table5_tasks", "table6_size", "table7_features", "table8_masking", "c1_steps")


def _flag(argv, name):
    return argv[argv.index(name) + 1]


def _override(argv, key, default=None):
    prefix = f"--config.{key}="
    return next((a[len(prefix):] for a in argv if a.startswith(prefix)), default)


class FakeRunner:
    """Writes a command's outputs, fine-tuned scores from a table of values per arm; raises
    after `fail_after` commands, as a killed sweep would stop."""

    def __init__(self, scores, fail_after=None):
        self.scores, self.fail_after, self.calls = scores, fail_after, []

    def __call__(self, argv):
        if self.fail_after is not None and len(self.calls) == self.fail_after:
            raise KeyboardInterrupt
        self.calls.append(list(argv))
        module = argv[2]
        if module == "bert.pretrain":
            workdir, steps = _flag(argv, "--workdir"), int(_override(argv, "train_steps"))
            every = int(_override(argv, "checkpoint_every"))
            for step in range(every, steps + 1, every):
                os.makedirs(os.path.join(workdir, "checkpoints", str(step)))
            with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
                for step in (steps // 2, steps):
                    f.write(json.dumps({"step": step, "mlm_loss": 3.0,
                                        "eval_mlm_loss": 2.0 if step == steps else 9.0}) + "\n")
        elif module == "bert.convert":
            os.makedirs(os.path.join(_flag(argv, "--output"), "params"))
        else:
            workdir = _flag(argv, "--workdir")
            arm, _, replica = os.path.basename(os.path.dirname(workdir)).partition(sweep.REPLICA)
            score = self.scores[arm] + 0.1 * int(replica or 0)  # pretraining seed k: +10 points
            seeds = [int(s) for s in _override(argv, "seeds").split(",")]
            runs = [{"seed": seed, "metrics": {"accuracy": score + 0.01 * seed, "f1": 100 * score}}
                    for seed in seeds]
            os.makedirs(workdir, exist_ok=True)
            with open(os.path.join(workdir, "eval_results.json"), "w") as f:
                json.dump({"runs": runs}, f)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return str(tmp_path / "table5")


def test_table5_expands_into_its_arms_and_overrides(workdir):
    table, arms = sweep.load_table(TABLE5, "tiny")
    assert [a.name for a in arms] == ["mlm_nsp", "no_nsp", "ltr", "ltr_bilstm"]
    assert [c.name for c in table.columns] == ["MNLI-m", "QNLI", "MRPC", "SST-2", "SQuAD"]
    plans = {p.arm.name: p for p in sweep.plan(table, arms, workdir, seeds=3)}

    def commands(arm, kind):
        return [list(j.argv) for j in plans[arm].jobs if j.kind == kind]

    ltr_pretrain, = commands("ltr", "pretrain")
    assert "--config.objective=ltr" in ltr_pretrain
    assert "--config.data.nsp_weight=0.0" in ltr_pretrain
    assert "--config.data.nsp_weight=0.0" in commands("no_nsp", "pretrain")[0]
    assert not any("objective" in a for a in commands("mlm_nsp", "pretrain")[0])
    # The BiLSTM arm pretrains nothing: it fine-tunes the LTR run with a BiLSTM on top.
    assert commands("ltr_bilstm", "pretrain") == []
    finetunes = commands("ltr_bilstm", "finetune")
    # MNLI-m, QNLI and MRPC share one proxy: three tasks, not five.
    assert [_flag(c, "--workdir") for c in finetunes] == [
        os.path.join(workdir, "ltr_bilstm", name)
        for name in ("trec_pairs", "sentiment", "wnut_spans")]
    for command in finetunes:
        assert "--config.top_bilstm=true" in command
        assert _override(command, "init_checkpoint") == os.path.join(workdir, "ltr", "pretrain")
        assert _override(command, "seeds") == "1,2,3"
    pairs = finetunes[0]
    assert _override(pairs, "train_file") == os.path.join(workdir, "data", "trec_pairs",
                                                          "train.tsv")
    assert _override(pairs, "reader.pair_column") == "text_b"
    assert arms[2].paper == {"MNLI-m": 82.1, "QNLI": 84.3, "MRPC": 77.5, "SST-2": 92.1,
                             "SQuAD": 77.8}


def test_table6_tiny_sizes_shrink_by_one_factor_and_keep_their_order():
    tiny = [a.pretrain for a in sweep.load_table("experiments/ablations/table6_size.py", "tiny")[1]]
    paper = [a.pretrain for a in sweep.load_table("experiments/ablations/table6_size.py",
                                                  "paper")[1]]
    for small, big in zip(tiny, paper):
        assert small["model.num_layers"] * 3 == big["model.num_layers"]
        assert small["model.hidden_size"] * 8 == big["model.hidden_size"]
        assert small["model.num_heads"] == big["model.num_heads"]
        assert small["model.hidden_size"] % small["model.num_heads"] == 0
    sizes = [(a["model.num_layers"], a["model.hidden_size"]) for a in tiny]
    assert [(3, 768), (6, 768), (6, 768), (12, 768), (12, 1024), (24, 1024)] == [
        (3 * l, 8 * h) for l, h in sizes]


def test_c1_fine_tunes_checkpoints_along_each_run(tmp_path):
    table, arms = sweep.load_table("experiments/ablations/c1_steps.py", "tiny")
    plans = sweep.plan(table, arms, str(tmp_path))
    steps = {p.arm.name: p.step for p in plans}
    assert steps == {"mlm": 2400, "mlm_step600": 600, "mlm_step1200": 1200,
                     "mlm_step1800": 1800, "ltr": 2400, "ltr_step600": 600, "ltr_step1200": 1200,
                     "ltr_step1800": 1800}
    export, = [j for p in plans if p.arm.name == "ltr_step1200" for j in p.jobs
               if j.kind == "at_step"]
    assert export.argv[2:] == ("bert.convert", "at-step", "--input",
                               str(tmp_path / "ltr" / "pretrain"), "--step", "1200", "--output",
                               str(tmp_path / "ltr_step1200" / "model"))


@pytest.mark.parametrize("name", TABLES)
def test_paper_scale_prints_one_launch_per_pretraining(name, capsys, tmp_path):
    path = f"experiments/ablations/{name}.py"
    text = sweep.sweep(path, str(tmp_path), scale="paper", dry_run=True)
    _, arms = sweep.load_table(path, "paper")
    launches = [line for line in text.splitlines() if line.startswith("sbatch launch/")]
    assert len(launches) == sum(a.pretrain_from == a.name for a in arms)
    assert all("experiments/pretrain/base.py" in line for line in launches)
    assert len([l for l in text.splitlines() if l.startswith("# arm ")]) == len(arms)
    assert not os.listdir(tmp_path)  # printed, nothing run


def test_table8_paper_launches_carry_each_masking_ratio(tmp_path):
    text = sweep.sweep("experiments/ablations/table8_masking.py", str(tmp_path), scale="paper",
                       launcher="tpu")
    launches = [l for l in text.splitlines() if l.startswith("launch/tpu_vm_pod.sh")]
    assert len(launches) == 6
    assert "--config.data.mask_token_ratio=0.0 --config.data.keep_token_ratio=0.2 " \
           "--config.data.random_token_ratio=0.8" in launches[4]
    assert '"--config.data.train_files=$CORPUS/*.txt"' in launches[0]


SCORES = {"mlm_nsp": 0.70, "no_nsp": 0.66, "ltr": 0.50, "ltr_bilstm": 0.704}


def test_an_interrupted_sweep_resumes_without_redoing_finished_work(workdir):
    first = FakeRunner(SCORES, fail_after=5)
    with pytest.raises(KeyboardInterrupt):
        sweep.sweep(TABLE5, workdir, seeds=2, runner=first)
    assert len(first.calls) == 5
    second = FakeRunner(SCORES)
    results = sweep.sweep(TABLE5, workdir, seeds=2, runner=second)
    # 3 pretrainings + 4 arms x 3 tasks = 15 commands, of which 5 had finished.
    assert len(second.calls) == 10
    assert not [c for c in second.calls if c in first.calls]
    third = FakeRunner(SCORES)
    assert sweep.sweep(TABLE5, workdir, seeds=2, runner=third) == results
    assert third.calls == []


def test_results_put_the_paper_beside_each_arm_and_mark_agreement(workdir):
    sweep.sweep(TABLE5, workdir, seeds=2, runner=FakeRunner(SCORES))
    text = open(os.path.join(workdir, "results.md")).read()
    header = next(l for l in text.splitlines() if l.startswith("| Arm"))
    assert header == "| Arm | MNLI-m | QNLI | MRPC | SST-2 | SQuAD |"
    rows = {l.split(" | ")[0][2:]: l for l in text.splitlines() if l.startswith("| ")}
    # Seeds 1 and 2 give mean score + 0.015 and spread 0.005 (in percent: 0.5).
    assert "71.50 ± 0.50 (paper 84.4) ref" in rows["BERT-base (MLM + NSP)"]
    assert "67.50 ± 0.50 (paper 83.9) ✓" in rows["No NSP"]  # lower, as in the paper
    # +0.4 over the reference with spreads of 0.5: within noise, not an agreement.
    assert "71.90 ± 0.50 (paper 82.1) ≈" in rows["+ BiLSTM"]
    assert "70.00 ± 0.00 (paper 88.5) ref" in rows["BERT-base (MLM + NSP)"]  # SQuAD: 0-100
    assert "Proxies" in text and "TREC question pairs" in text
    with open(os.path.join(workdir, "results.csv")) as f:
        lines = f.read().splitlines()
    assert lines[0] == ",".join(sweep_results.CSV_FIELDS)
    assert len(lines) - 1 == 4 * 5 * 2  # arms x columns x seeds
    assert re.search(r"^table5_tasks,ltr,LTR & No NSP,MRPC,trec_pairs,.*,2400,0,2,52\.0,77\.5$",
                     "\n".join(lines), re.M)
    with open(os.path.join(workdir, "table5_tasks.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_marks_compare_differences_with_the_paper():
    reference = Cell((80.0, 82.0), 84.0)
    assert sweep_results.mark(Cell((70.0, 72.0), 83.0), reference) == AGREE
    assert sweep_results.mark(Cell((90.0, 92.0), 83.0), reference) == DISAGREE
    assert sweep_results.mark(Cell((81.0, 82.0), 83.0), reference) == NOISE
    assert sweep_results.mark(reference, reference) == "ref"
    cells = [reference, Cell((70.0,), 83.0), Cell((60.0,), 85.0)]
    assert sweep_results.pair_agreement(cells) == (1, 0, 2)


def test_bad_arms_are_named(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("from bert.ablations.table import Column, Table\n"
                    "def get_config(scale):\n"
                    "    return Table('bad', 't', 'p', 'experiments/pretrain/tiny.py', {}, "
                    "(Column('A'),))\n"
                    "def get_arms(scale):\n"
                    "    return [dict(name='x', paper={'B': 1.0})]\n")
    with pytest.raises(ValueError, match=r"arm 'x': paper names columns B"):
        sweep.load_table(str(path), "tiny")


def test_pretraining_seeds_add_replicas_whose_runs_pool_into_their_arm(workdir, capsys):
    runner = FakeRunner(SCORES)
    sweep.sweep(TABLE5, workdir, seeds=2, pretrain_seeds=2, runner=runner)
    pretrainings = {_flag(c, "--workdir"): c for c in runner.calls if c[2] == "bert.pretrain"}
    assert len(pretrainings) == 6  # 3 pretraining arms x 2 seeds
    replica = pretrainings[os.path.join(workdir, "ltr.pseed1", "pretrain")]
    assert _override(replica, "seed") == "1" and _override(replica, "objective") == "ltr"
    assert _override(pretrainings[os.path.join(workdir, "ltr", "pretrain")], "seed") is None
    # The replicas run after every original arm; the BiLSTM replica fine-tunes the LTR replica.
    kinds = [os.path.basename(os.path.dirname(_flag(c, "--workdir"))) for c in runner.calls]
    assert kinds.index("mlm_nsp.pseed1") > max(kinds.index(a) for a in SCORES)
    bilstm = [c for c in runner.calls
              if os.path.dirname(_flag(c, "--workdir")).endswith("ltr_bilstm.pseed1")]
    assert {_override(c, "init_checkpoint") for c in bilstm} == {
        os.path.join(workdir, "ltr.pseed1", "pretrain")}
    text = open(os.path.join(workdir, "results.md")).read()
    rows = [l for l in text.splitlines() if l.startswith("| ")]
    assert len(rows) == 1 + 4 + 1 + 5  # header and one row per arm (no replica rows), agreement
    # Fine-tuning seeds 1, 2 of pretraining seeds 0 and 1 (+10 points): 71, 72, 81, 82.
    assert "76.50 ± 5.02 (paper 84.4) ref" in rows[1]
    assert "over fine-tuning seeds of 2 pretraining seeds each" in text
    with open(os.path.join(workdir, "results.csv")) as f:
        lines = f.read().splitlines()
    assert len(lines) - 1 == 2 * 4 * 5 * 2  # pretraining seeds x arms x columns x seeds
    assert re.search(r"^table5_tasks,mlm_nsp,BERT-base \(MLM \+ NSP\),SST-2,sentiment,.*,"
                     r"2400,1,2,82\.0,92\.7$", "\n".join(lines), re.M)
    capsys.readouterr()
    sweep.main([TABLE5, "--workdir", workdir, "--pretrain_seeds", "2", "--dry-run"])
    assert "# arm ltr.pseed1" in capsys.readouterr().out
