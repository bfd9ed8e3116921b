"""`sparsebert finetune task=squad|squad_v2` then `evaluate`, end to end through the real CLI on
small files in the official SQuAD JSON layout."""

import json
from pathlib import Path

import pytest
from conftest import sparsebert

pytestmark = pytest.mark.slow

# (context, [(question, answer or None for no answer, which occurrence of the answer)])
PARAGRAPHS = [
    (
        "The Danube flows through ten countries, more than any other river in the world. It "
        "rises in the Black Forest of Germany and empties into the Black Sea.",
        [
            ("How many countries does the Danube flow through?", "ten", 0),
            ("Where does the Danube rise?", "the Black Forest of Germany", 0),
            ("Into which sea does the Danube empty?", "the Black Sea", 0),
            ("How long is the Danube?", None, 0),
        ],
    ),
    (
        "Marie Skłodowska-Curie was born in Warsaw in 1867.  She won the Nobel Prize in "
        "Physics in 1903 and in Chemistry in 1911.",
        [
            ("Where was Marie Curie born?", "Warsaw", 0),
            ("When did she win the Nobel Prize in Chemistry?", "1911", 0),
            ("In which year was she born?", "1867", 0),
            ("Who was her husband?", None, 0),
        ],
    ),
    (
        "Café culture in Vienna dates back to 1685, when the first coffee house opened near "
        "St. Stephen's Cathedral.",
        [
            ("When did the first coffee house open in Vienna?", "1685", 0),
            ("Near which cathedral did it open?", "St. Stephen's Cathedral", 0),
        ],
    ),
    (
        "Mount Kilimanjaro, at 5,895 metres, is the highest mountain in Africa. It is a "
        "dormant volcano in Tanzania.",
        [
            ("How high is Mount Kilimanjaro?", "5,895 metres", 0),
            ("In which country is Kilimanjaro?", "Tanzania", 0),
            ("What kind of volcano is Kilimanjaro?", "dormant", 0),
            ("What is the capital of Tanzania?", None, 0),
        ],
    ),
    (
        "The Rosetta Stone was found in 1799 by French soldiers in the Nile delta. It carries "
        "the same decree in hieroglyphic, Demotic and ancient Greek scripts.",
        [
            ("Who found the Rosetta Stone?", "French soldiers", 0),
            ("When was the Rosetta Stone found?", "1799", 0),
            ("Where was the Rosetta Stone found?", "the Nile delta", 0),
        ],
    ),
    (
        "Honeybees communicate the location of flowers with a waggle dance. The angle of the "
        "dance shows the direction relative to the sun.",
        [
            ("How do honeybees communicate where flowers are?", "a waggle dance", 0),
            ("What does the angle of the dance show?", "the direction relative to the sun", 0),
            ("How long do honeybees live?", None, 0),
        ],
    ),
    (
        "São Paulo is the most populous city in Brazil,\twith more than twelve million "
        "inhabitants in the city proper.",
        [
            ("What is the most populous city in Brazil?", "São Paulo", 0),
            ("How many people live in São Paulo?", "more than twelve million", 0),
        ],
    ),
    (
        "The Great Fire of London began on 2 September 1666 in a bakery on Pudding Lane and "
        "burned for four days.",
        [
            ("Where did the Great Fire of London begin?", "a bakery on Pudding Lane", 0),
            ("How long did the fire burn?", "four days", 0),
            ("When did the fire begin?", "2 September 1666", 0),
        ],
    ),
]


def squad_document(v2: bool) -> dict:
    """The paragraphs in the official layout (v1.1 leaves out the unanswerable questions)."""
    articles = []
    for number, (context, questions) in enumerate(PARAGRAPHS):
        qas = []
        for position, (question, answer, occurrence) in enumerate(questions):
            if answer is None and not v2:
                continue
            qa = {"id": f"q{number}-{position}", "question": question, "answers": []}
            if answer is not None:
                start = -1
                for _ in range(occurrence + 1):
                    start = context.index(answer, start + 1)
                qa["answers"] = [{"text": answer, "answer_start": start}]
            if v2:
                qa["is_impossible"] = answer is None
            qas.append(qa)
        articles.append(
            {"title": f"article {number}", "paragraphs": [{"context": context, "qas": qas}]}
        )
    return {"version": "v2.0" if v2 else "1.1", "data": articles}


def write_squad_files(folder: Path, v2: bool) -> Path:
    """train-v1.1.json and dev-v1.1.json (or -v2.0) in `folder`, the same questions in both."""
    folder.mkdir(parents=True, exist_ok=True)
    version = "v2.0" if v2 else "v1.1"
    text = json.dumps(squad_document(v2), ensure_ascii=False)
    for split in ("train", "dev"):
        (folder / f"{split}-{version}.json").write_text(text, encoding="utf-8")
    return folder


def finetune_then_evaluate(workdir: Path, task: str, mask: str, v2: bool) -> Path:
    data = write_squad_files(workdir / "squad", v2)
    common = ("debug=smoke", "model=tiny")
    sparsebert(
        "finetune", f"task={task}", f"task.data_dir={data}", f"mask={mask}", *common, cwd=workdir
    )
    sparsebert("evaluate", cwd=workdir)
    (run,) = (workdir / "runs" / "evaluate").iterdir()
    return run


def test_squad_with_a_fixed_pattern_writes_metrics_and_predictions(workdir):
    run = finetune_then_evaluate(workdir, "squad", "longformer", v2=False)
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"eval/exact", "eval/f1", "eval/headline", "mask/sparsity"} <= set(metrics)
    predictions = json.loads((run / "predictions" / "predictions.json").read_text())
    assert len(predictions) == 21 and all(isinstance(v, str) for v in predictions.values())
    assert not (run / "predictions" / "null_odds.json").exists()


def test_squad_v2_with_a_dam_writes_null_odds_and_no_answer_metrics(workdir):
    run = finetune_then_evaluate(workdir, "squad_v2", "dam", v2=True)
    metrics = json.loads((run / "metrics.json").read_text())
    expected = {"eval/HasAns_f1", "eval/NoAns_f1", "eval/null_threshold", "eval/f1"}
    assert expected <= set(metrics)
    odds = json.loads((run / "predictions" / "null_odds.json").read_text())
    predictions = json.loads((run / "predictions" / "predictions.json").read_text())
    assert set(odds) == set(predictions) and len(predictions) == 25
