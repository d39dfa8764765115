"""Table 6 of the paper: model size. Six (layers, hidden, heads) sizes, their held-out MLM
perplexity and fine-tuned dev accuracy.

    python -m bert.sweep experiments/ablations/table6_size.py --workdir runs/ablations/table6
    python -m bert.sweep experiments/ablations/table6_size.py --workdir /shared/table6 --scale paper

Tiny scale shrinks every size by the same factors, layers / 3 and hidden / 8 (heads kept, so
each head is 8 wide), which keeps their order: (1, 96, 12) ... (8, 128, 16). Six short
pretrainings and 6 x 2 tasks x 3 seeds of fine-tuning, 52 minutes on 2 CPU cores shared with
other sweeps (docs/ABLATIONS.md).
"""
from bert.ablations import tasks
from bert.ablations.table import Column, Table

COLUMNS = ("LM (ppl)", "MNLI-m", "MRPC", "SST-2")
SIZES = ((3, 768, 12), (6, 768, 3), (6, 768, 12), (12, 768, 12), (12, 1024, 16), (24, 1024, 16))
PAPER = ((5.84, 77.9, 79.8, 88.4), (5.24, 80.6, 82.2, 90.7), (4.68, 81.9, 84.8, 91.3),
         (3.99, 84.4, 86.7, 92.9), (3.54, 85.7, 86.9, 93.3), (3.23, 86.6, 87.8, 93.7))
TINY_LAYERS, TINY_HIDDEN = 3, 8  # the factors every size is divided by at tiny scale


def get_config(scale: str = "tiny") -> Table:
    config, overrides = tasks.pretraining(scale)
    return Table(
        name="table6_size",
        title="Table 6: ablation over BERT model size",
        paper="Devlin et al. (2018), Table 6: held-out LM perplexity, dev accuracy (5 restarts)",
        pretrain_config=config, pretrain_overrides=overrides,
        columns=(Column("LM (ppl)", pretrain_metric="eval_mlm_loss", exp=True),
                 Column("MNLI-m", tasks.pair_task(scale, "mnli")),
                 Column("MRPC", tasks.pair_task(scale, "mrpc")),
                 Column("SST-2", tasks.sentiment_task(scale))),
        reference="L12_H768_A12",
        notes=("LM (ppl) is exp of the held-out MLM loss (masked tokens only), as the paper's "
               "'LM perplexity of held-out training data'.",))


def get_arms(scale: str = "tiny") -> list[dict]:
    arms = []
    for (layers, hidden, heads), paper in zip(SIZES, PAPER):
        if scale == "tiny":
            size = (layers // TINY_LAYERS, hidden // TINY_HIDDEN, heads)
        else:
            size = (layers, hidden, heads)
        arms.append(dict(
            name=f"L{layers}_H{hidden}_A{heads}", label=f"L={size[0]} H={size[1]} A={size[2]}",
            pretrain={"model.num_layers": size[0], "model.hidden_size": size[1],
                      "model.num_heads": size[2], "model.intermediate_size": 4 * size[1]},
            paper=dict(zip(COLUMNS, paper))))
    return arms
