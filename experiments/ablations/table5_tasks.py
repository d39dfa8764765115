"""Table 5 of the paper: the pre-training tasks. MLM + NSP (BERT-base) against MLM alone, a
left-to-right LM (causal attention, next-token loss, no NSP), and that LM with a randomly
initialised BiLSTM on top during fine-tuning.

    python -m bert.sweep experiments/ablations/table5_tasks.py --workdir runs/ablations/table5
    python -m bert.sweep experiments/ablations/table5_tasks.py --workdir /shared/table5 --scale paper

Tiny scale: 3 pretrainings of the fast recipe (2,400 steps) and 4 arms x 3 tasks x 3 seeds of
fine-tuning, about 40 minutes on 2 CPU cores shared with other work (docs/ABLATIONS.md). MNLI-m,
QNLI and MRPC share one sentence-pair proxy there.
"""
from bert.ablations import tasks
from bert.ablations.table import Column, Table

COLUMNS = ("MNLI-m", "QNLI", "MRPC", "SST-2", "SQuAD")


def get_config(scale: str = "tiny") -> Table:
    config, overrides = tasks.pretraining(scale)
    return Table(
        name="table5_tasks",
        title="Table 5: ablation over the pre-training tasks",
        paper="Devlin et al. (2018), Table 5: BERT-base, dev sets (SQuAD v1.1 F1)",
        pretrain_config=config, pretrain_overrides=overrides,
        columns=(Column("MNLI-m", tasks.pair_task(scale, "mnli")),
                 Column("QNLI", tasks.pair_task(scale, "qnli")),
                 Column("MRPC", tasks.pair_task(scale, "mrpc")),
                 Column("SST-2", tasks.sentiment_task(scale)),
                 Column("SQuAD", tasks.span_task(scale))),
        reference="mlm_nsp",
        notes=("No NSP and LTR keep the same instances (sentence pairs, half with a random "
               "second segment) and drop the NSP loss; LTR reads them unmasked.",
               "A causal model pools its last real token, the only one that has seen the "
               "whole input; the BiLSTM arm fine-tunes the LTR model with a fresh BiLSTM "
               "under every head."))


def get_arms(scale: str = "tiny") -> list[dict]:
    def paper(*values: float) -> dict:
        return dict(zip(COLUMNS, values))

    return [
        dict(name="mlm_nsp", label="BERT-base (MLM + NSP)", pretrain={},
             paper=paper(84.4, 88.4, 86.7, 92.7, 88.5)),
        dict(name="no_nsp", label="No NSP", pretrain={"data.nsp_weight": 0.0},
             paper=paper(83.9, 84.9, 86.5, 92.6, 87.9)),
        dict(name="ltr", label="LTR & No NSP", pretrain={"objective": "ltr",
                                                         "data.nsp_weight": 0.0},
             paper=paper(82.1, 84.3, 77.5, 92.1, 77.8)),
        dict(name="ltr_bilstm", label="+ BiLSTM", pretrain_from="ltr",
             finetune={"top_bilstm": True}, paper=paper(82.1, 84.1, 75.7, 91.6, 84.9)),
    ]
