"""Table 8 of the paper: the masking procedure. Of the tokens chosen for prediction, the share
shown as [MASK], kept the same, or replaced by a random token, evaluated by fine-tuning (MNLI,
NER) and by the feature-based approach (NER, concatenation of the last four layers).

    python -m bert.sweep experiments/ablations/table8_masking.py --workdir runs/ablations/table8
    python -m bert.sweep experiments/ablations/table8_masking.py --workdir /shared/table8 --scale paper

Tiny scale: six 4-layer BERT-tiny pretrainings, 6 x 3 tasks x 3 seeds of fine-tuning, 83 minutes
on 2 CPU cores shared with other jobs throughout (docs/ABLATIONS.md).
"""
from bert.ablations import tasks
from bert.ablations.table import Column, Table

COLUMNS = ("MNLI-m", "NER fine-tune", "NER feature-based")
# (mask, same, random) in percent, and the paper's dev results.
RATIOS = (((80, 10, 10), (84.2, 95.4, 94.9)), ((100, 0, 0), (84.3, 94.9, 94.0)),
          ((80, 0, 20), (84.1, 95.2, 94.6)), ((80, 20, 0), (84.4, 95.2, 94.7)),
          ((0, 20, 80), (83.7, 94.8, 94.6)), ((0, 0, 100), (83.6, 94.9, 94.6)))


def get_config(scale: str = "tiny") -> Table:
    config, overrides = tasks.pretraining(scale)
    if scale == "tiny":
        overrides = {**overrides, "model.num_layers": 4}  # concat_last_four reads 4 blocks
    return Table(
        name="table8_masking",
        title="Table 8: ablation over the masking procedure",
        paper="Devlin et al. (2018), Table 8: BERT-base, MNLI-m and CoNLL-2003 dev",
        pretrain_config=config, pretrain_overrides=overrides,
        columns=(Column("MNLI-m", tasks.pair_task(scale, "mnli")),
                 Column("NER fine-tune", tasks.ner_task(scale)),
                 Column("NER feature-based", tasks.ner_features_task(scale, "concat_last_four"))),
        reference="mask80_same10_rnd10")


def get_arms(scale: str = "tiny") -> list[dict]:
    arms = []
    for (mask, same, random), paper in RATIOS:
        arms.append(dict(
            name=f"mask{mask}_same{same}_rnd{random}", label=f"{mask}/{same}/{random}",
            pretrain={"data.mask_token_ratio": mask / 100, "data.keep_token_ratio": same / 100,
                      "data.random_token_ratio": random / 100},
            paper=dict(zip(COLUMNS, paper))))
    return arms
