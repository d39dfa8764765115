"""Appendix C.1 of the paper: the effect of the number of pre-training steps. Fine-tuned dev
accuracy from checkpoints along one MLM run and one left-to-right run, and their convergence
(pretraining loss against steps, from each run's metrics.jsonl).

    python -m bert.sweep experiments/ablations/c1_steps.py --workdir runs/ablations/c1
    python -m bert.sweep experiments/ablations/c1_steps.py --workdir /shared/c1 --scale paper

Tiny scale: two BERT-tiny pretrainings checkpointed every 500 steps, MNLI's pair proxy
fine-tuned from 4 checkpoints of each with 3 seeds, 15 minutes on 2 CPU cores shared with another
sweep (docs/ABLATIONS.md).

The paper gives this as a figure (Figure 5), not numbers: "BERT-base achieves almost 1.0%
additional accuracy on MNLI when trained on 1M steps compared to 500k steps", and "the MLM model
does converge slightly slower than a LTR model [...] but it begins to outperform the LTR model
in terms of absolute accuracy almost immediately". No paper number is put beside an arm.
"""
from bert.ablations import tasks
from bert.ablations.table import Column, Table

# The last step of each is its run's end: phase 1 of the paper's recipe ends at 900k (128 tokens).
TINY_STEPS = tuple(tasks.TINY_PRETRAIN_STEPS * k // 4 for k in range(1, 5))
PAPER_STEPS = (100_000, 300_000, 500_000, 700_000, 900_000)


def get_config(scale: str = "tiny") -> Table:
    config, overrides = tasks.pretraining(scale)
    every = TINY_STEPS[0] if scale == "tiny" else 100_000
    return Table(
        name="c1_steps",
        title="Appendix C.1: ablation over the number of pre-training steps",
        paper="Devlin et al. (2018), Figure 5: MNLI dev accuracy against pre-training steps",
        pretrain_config=config,
        pretrain_overrides={**overrides, "checkpoint_every": every, "keep_checkpoints": 100,
                            "eval_every": every},
        columns=(Column("MNLI-m", tasks.pair_task(scale, "mnli")),),
        steps=True,
        notes=("The paper reports a figure, so no paper number stands beside an arm; its "
               "claims: +1.0 MNLI from 500k to 1M steps, MLM ahead of LTR almost from the start.",))


def get_arms(scale: str = "tiny") -> list[dict]:
    steps = TINY_STEPS if scale == "tiny" else PAPER_STEPS
    arms = []
    ltr = {"objective": "ltr", "data.nsp_weight": 0.0}
    for objective, label, pretrain in (("mlm", "MLM", {}), ("ltr", "LTR", ltr)):
        arms.append(dict(name=objective, label=f"{label} @ {steps[-1]}", pretrain=pretrain,
                         group=label))
        arms += [dict(name=f"{objective}_step{step}", label=f"{label} @ {step}",
                      pretrain_from=objective, step=step, group=label) for step in steps[:-1]]
    return arms
