"""Text preparation on adversarial input: linear time on long unsplit lines, and a trained
tokenizer that is the same bytes in every process.

The time limits are complexity guards, not benchmarks: each case takes about a second when
linear and hours when quadratic, so a generous subprocess timeout tells the two apart.
"""

import hashlib
import random
import subprocess
import sys

import pytest

from sparsebert_cli.data.corpus import split_sentences
from sparsebert_cli.data.pretraining import truncate_pair

GUARD_S = 60  # linear: a few seconds on a loaded machine; quadratic: far beyond

ADVERSARIAL = {
    "initials": "'A. ' * 1_700_000",  # 5 MB of initials: no boundary is ever accepted
    "no sentence end": "'word ' * 1_000_000",
    "one long word": "'x' * 5_000_000 + '. Next'",
    "tabs between initials": "'J.\\t' * 1_700_000",
}


@pytest.mark.parametrize("line", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_sentence_splitting_is_linear_on_a_5_mb_line(line):
    code = f"from sparsebert_cli.data.corpus import split_sentences; split_sentences({line})"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=GUARD_S)


def test_truncating_a_5_million_token_segment_is_linear():
    code = (
        "import random; from sparsebert_cli.data.pretraining import truncate_pair; "
        "a = list(range(5_000_000)); truncate_pair(a, [1], 128, random.Random(0)); "
        "assert len(a) == 127"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=GUARD_S)


def _truncate_one_by_one(a, b, max_tokens, rng):
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


@pytest.mark.parametrize("seed", range(50))
def test_truncation_keeps_exactly_the_tokens_of_removing_them_one_by_one(seed):
    rng = random.Random(seed)
    a, b = list(range(rng.randint(0, 80))), list(range(100, 100 + rng.randint(0, 80)))
    limit = rng.randint(0, 100)
    expected_a, expected_b = a[:], b[:]
    _truncate_one_by_one(expected_a, expected_b, limit, random.Random(seed))
    truncate_pair(a, b, limit, random.Random(seed))
    assert (a, b) == (expected_a, expected_b)


def test_sentence_splitting_keeps_abbreviations_and_initials():
    assert split_sentences(
        "Dr. Smith met J. R. R. Tolkien in the U.S. Army. Then he left! Why?"
    ) == [
        "Dr. Smith met J. R. R. Tolkien in the U.S. Army.",
        "Then he left!",
        "Why?",
    ]


TRAIN = """
import sys
import datasets
from sparsebert_cli.data.tokenizer import train_wordpiece
words = ["zebra", "aardvark", "quick", "brown", "fox", "jumps", "lazy", "dogs", "cats", "ox"]
texts = [" ".join(words[(i * k) % len(words)] + str(k % 7) for k in range(12)) for i in range(200)]
train_wordpiece(datasets.Dataset.from_dict({"text": texts}), 150).save_pretrained(sys.argv[1])
"""


def test_the_trained_tokenizer_is_the_same_bytes_in_two_processes(tmp_path):
    digests = []
    for name in ("first", "second"):
        folder = tmp_path / name
        subprocess.run([sys.executable, "-c", TRAIN, str(folder)], check=True, timeout=300)
        digests.append(hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest())
    assert digests[0] == digests[1]
