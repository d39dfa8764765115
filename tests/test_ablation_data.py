"""The proxy sets of the ablation tables (bert/ablations/data.py), built from the shipped data."""
import json
from collections import Counter

import pytest

from bert.ablations import data as ablation_data


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    output = tmp_path_factory.mktemp("ablation_data")
    ablation_data.build(output)
    return output


def _questions(squad: dict) -> dict[str, tuple[str, dict]]:
    return {qa["id"]: (paragraph["context"], qa) for article in squad["data"]
            for paragraph in article["paragraphs"] for qa in paragraph["qas"]}


def test_building_twice_gives_the_same_bytes(built, tmp_path):
    ablation_data.build(tmp_path)
    for name in ("trec_pairs/train.tsv", "trec_pairs/dev.tsv", "wnut_questions/dev.json",
                 "wnut_spans/train.json", "wnut_spans/dev.json"):
        assert (tmp_path / name).read_bytes() == (built / name).read_bytes(), name


def test_trec_pairs_are_balanced_pairs_of_real_questions(built):
    lines = (built / "trec_pairs" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == ["text", "text_b", "label"]
    rows = [line.split("\t") for line in lines[1:]]
    labels = Counter(label for _, _, label in rows)
    assert set(labels) == {"same", "different"}
    assert abs(labels["same"] - labels["different"]) <= 0.1 * len(rows)
    questions = {text for text, _ in ablation_data.read_trec(ablation_data.TREC_DIR / "dev.tsv")}
    assert all(a in questions and b in questions and a != b for a, b, _ in rows)


@pytest.mark.parametrize("split", ["train", "dev"])
def test_span_sets_answer_at_their_offsets_and_v11_keeps_only_answerable(built, split):
    v2 = json.loads((built / "wnut_questions" / f"{split}.json").read_text(encoding="utf-8"))
    v11 = json.loads((built / "wnut_spans" / f"{split}.json").read_text(encoding="utf-8"))
    assert (v2["version"], v11["version"]) == ("v2.0", "1.1")
    both, answerable = _questions(v2), _questions(v11)
    assert sum(qa["is_impossible"] for _, qa in both.values()) == len(v2["data"])  # 1 per tweet
    # v1.1: exactly the answerable questions of v2.0, same contexts and answers, no flag.
    assert set(answerable) == {k for k, (_, qa) in both.items() if not qa["is_impossible"]}
    for key, (context, qa) in answerable.items():
        assert "is_impossible" not in qa and qa["answers"]
        assert (context, qa["answers"]) == (both[key][0], both[key][1]["answers"])
        for answer in qa["answers"]:
            start = answer["answer_start"]
            assert context[start:start + len(answer["text"])] == answer["text"]
    assert all(paragraph["qas"] for article in v11["data"] for paragraph in article["paragraphs"])
