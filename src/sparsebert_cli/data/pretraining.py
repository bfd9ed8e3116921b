"""BERT pre-training examples: sentence pairs with next-sentence labels and static MLM masks.

The recipe of Google's `create_pretraining_data.py`, which the paper's reference code uses:
- Documents are split into held-out `eval` and `train` documents (`data.eval_fraction`). The
  split and the eval examples (and their order) are drawn with `HELD_OUT_SEED`, not the run's
  seed: every seed evaluates on the same examples, and a continuation (`model.from=`) with another
  seed never evaluates on documents its checkpoint trained on.
- Sentences of a document are packed into chunks up to `seq_len - 3` tokens (with probability
  `short_seq_prob` a shorter random target, so the model also sees short inputs). A chunk splits
  at a random sentence boundary into segment A and B; B is replaced with probability 0.5 by text
  from a random other document (next_sentence_label 1; 0 = B really follows A). A one-sentence
  chunk cannot be split and always takes a random B, so slightly over half are random.
- Pairs too long are trimmed one token at a time from the longer segment, front or back at random.
- Masked LM: `round(len × mlm_probability)` positions (at least 1, at most
  `max_predictions_per_seq`) among the non-special tokens; 80 % become [MASK], 10 % a random
  non-special token, 10 % stay. [CLS], [SEP] and padding are never chosen.
- With `data.nsp=false` an example is one segment `[CLS] A [SEP]` and next_sentence_label is -100.
Every document draws from its own RNG seeded by (seed, pass, document index), so the examples do
not depend on `num_proc`; the run's seed draws the train examples and their order. The result is
cached under `cache_dir/pretraining/` keyed by a hash of the corpus, the tokenizer's full
definition, the parameters and the seed.
"""

import math
import random
from pathlib import Path

from sparsebert_cli.data.cache import cached_dataset, content_key
from sparsebert_cli.data.config import HELD_OUT_SEED
from sparsebert_cli.data.corpus import corpus_identity, load_corpus, map_processes
from sparsebert_cli.data.padding import padded_inputs
from sparsebert_cli.errors import SparseBertError

PRETRAINING_FORMAT = 3  # bump when the recipe below changes, to invalidate caches
NOT_NSP = -100  # next_sentence_label when data.nsp=false: ignored by a cross-entropy loss


def held_out_identity(data_cfg) -> dict:
    """What decides which documents pre-training holds out (drawn with `HELD_OUT_SEED`)."""
    return {**corpus_identity(data_cfg), "eval_fraction": data_cfg.eval_fraction}


def build_pretraining_splits(data_cfg, tokenizer, seed: int, cache_dir: Path):
    """`DatasetDict` with `train` and `eval` pre-training examples, built once per cache key
    (the settings' ranges are checked once, by `validation`, before any work)."""
    parameters = {
        name: getattr(data_cfg, name)
        for name in (
            "seq_len",
            "mlm_probability",
            "max_predictions_per_seq",
            "nsp",
            "short_seq_prob",
            "dupe_factor",
            "eval_fraction",
        )
    }
    key = content_key(
        {
            "format": PRETRAINING_FORMAT,
            "corpus": corpus_identity(data_cfg),
            "tokenizer": tokenizer.backend_tokenizer.to_str(),
            "parameters": parameters,
            "seed": seed,
        }
    )
    path = cache_dir / "pretraining" / f"examples-{key}"
    return cached_dataset(path, lambda: build_splits(data_cfg, tokenizer, seed, cache_dir, key))


def split_documents(corpus, data_cfg):
    """{"train", "test"}: the corpus's documents, `data.eval_fraction` of them held out (drawn
    with `HELD_OUT_SEED`). Documents, not texts: a text the corpus holds twice can fall on both
    sides (wiki_sample: one Lee article, README "The embedded corpora")."""
    return corpus.train_test_split(test_size=data_cfg.eval_fraction, seed=HELD_OUT_SEED)


def build_splits(data_cfg, tokenizer, seed: int, cache_dir: Path, key: str):
    import datasets

    corpus = load_corpus(data_cfg, cache_dir)
    if len(corpus) < 2:
        more = " or raise data.max_documents" if data_cfg.max_documents is not None else ""
        raise SparseBertError(
            f"The corpus data={data_cfg.name} has {len(corpus)} document(s); pre-training needs at "
            f"least 2 (one held out for evaluation). Add text{more}."
        )
    held_out = math.ceil(data_cfg.eval_fraction * len(corpus))
    if held_out >= len(corpus):
        raise SparseBertError(
            f"data.eval_fraction={data_cfg.eval_fraction} holds out {held_out} of the "
            f"{len(corpus)} documents of data={data_cfg.name}, leaving none to train on; lower "
            "data.eval_fraction (or add text / raise data.max_documents)."
        )
    documents = split_documents(corpus, data_cfg)
    splits = {}
    for split, source, split_seed in (
        ("train", documents["train"], seed),
        ("eval", documents["test"], HELD_OUT_SEED),
    ):
        tokenized = tokenize_documents(source, tokenizer, data_cfg, f"{key}-{split}")
        examples = tokenized.map(
            create_examples,
            batched=True,
            with_indices=True,
            remove_columns=tokenized.column_names,
            features=example_features(),
            fn_kwargs={
                "documents": tokenized,
                "settings": example_settings(data_cfg, tokenizer),
                "seed": split_seed,
            },
            num_proc=map_processes(data_cfg),
            new_fingerprint=f"{key}-{split}-examples",
            desc=f"creating {split} pre-training examples",
        )
        # eval too: its first examples (what the attention gate and occlusion read) then span
        # the held-out documents instead of coming from one
        splits[split] = examples.shuffle(seed=split_seed)
    return datasets.DatasetDict(splits)


def tokenize_documents(source, tokenizer, data_cfg, fingerprint: str):
    """Documents as lists of token-id sentences (column `sentences`), empty documents dropped."""

    def tokenize(batch):
        sentences = [text.split("\n") for text in batch["text"]]
        flat = tokenizer([s for doc in sentences for s in doc], add_special_tokens=False)
        ids, documents = iter(flat["input_ids"]), []
        for doc in sentences:
            documents.append([s for s in (next(ids) for _ in doc) if s])
        return {"sentences": documents}

    tokenized = source.map(
        tokenize,
        batched=True,
        remove_columns=source.column_names,
        num_proc=map_processes(data_cfg),
        new_fingerprint=f"{fingerprint}-tokens",
        desc="tokenizing documents",
    )
    return tokenized.filter(
        lambda batch: [bool(doc) for doc in batch["sentences"]],
        batched=True,
        new_fingerprint=f"{fingerprint}-nonempty",
    )


def example_settings(data_cfg, tokenizer) -> dict:
    special = set(tokenizer.all_special_ids)
    return {
        "seq_len": data_cfg.seq_len,
        "nsp": data_cfg.nsp,
        "short_seq_prob": data_cfg.short_seq_prob,
        "dupe_factor": data_cfg.dupe_factor,
        "mlm_probability": data_cfg.mlm_probability,
        "max_predictions": data_cfg.max_predictions_per_seq,
        "cls_id": tokenizer.cls_token_id,
        "sep_id": tokenizer.sep_token_id,
        "mask_id": tokenizer.mask_token_id,
        "replacement_ids": [i for i in range(len(tokenizer)) if i not in special],
    }


def example_features():
    import datasets

    return datasets.Features(
        {
            "input_ids": datasets.List(datasets.Value("int32")),
            "token_type_ids": datasets.List(datasets.Value("int8")),
            "attention_mask": datasets.List(datasets.Value("int8")),
            "masked_lm_positions": datasets.List(datasets.Value("int32")),
            "masked_lm_ids": datasets.List(datasets.Value("int32")),
            "masked_lm_weights": datasets.List(datasets.Value("float32")),
            "next_sentence_label": datasets.Value("int64"),
        }
    )


def create_examples(batch, indices, documents, settings, seed):
    """`datasets.map` function: all examples of a batch of documents, for every pass."""
    columns = {name: [] for name in example_features()}
    for sentences, index in zip(batch["sentences"], indices, strict=True):
        for dupe in range(settings["dupe_factor"]):
            rng = random.Random(f"{seed}:{dupe}:{index}")
            for a, b, label in segment_pairs(sentences, index, documents, settings, rng):
                for name, value in make_example(a, b, label, settings, rng).items():
                    columns[name].append(value)
    return columns


def segment_pairs(sentences, index, documents, settings, rng):
    """Yield (segment A, segment B, next_sentence_label) from one document (BERT's packing)."""
    max_tokens = settings["seq_len"] - (3 if settings["nsp"] else 2)
    target = max_tokens
    if rng.random() < settings["short_seq_prob"]:
        target = rng.randint(2, max_tokens)
    chunk, length, i = [], 0, 0
    while i < len(sentences):
        chunk.append(sentences[i])
        length += len(sentences[i])
        if i == len(sentences) - 1 or length >= target:
            if not settings["nsp"]:
                yield [t for s in chunk for t in s][:max_tokens], [], NOT_NSP
            else:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                a = [t for s in chunk[:a_end] for t in s]
                if len(chunk) == 1 or rng.random() < 0.5:
                    b = random_segment(documents, index, target - len(a), rng)
                    i -= len(chunk) - a_end  # the unused sentences start the next chunk
                    label = 1
                else:
                    b = [t for s in chunk[a_end:] for t in s]
                    label = 0
                truncate_pair(a, b, max_tokens, rng)
                yield a, b, label
            chunk, length = [], 0
            if rng.random() < settings["short_seq_prob"]:
                target = rng.randint(2, max_tokens)
            else:
                target = max_tokens
        i += 1


def random_segment(documents, index, target_length, rng):
    """Tokens from a random start sentence of another document, up to `target_length`."""
    other = index
    for _ in range(10):
        other = rng.randrange(len(documents))
        if other != index:
            break
    sentences = documents[other]["sentences"]
    segment = []
    for sentence in sentences[rng.randrange(len(sentences)) :]:
        segment.extend(sentence)
        if len(segment) >= target_length:
            break
    return segment


def truncate_pair(a, b, max_tokens, rng):
    """Trim the longer segment, from the front or the back at random, until the pair fits.

    One draw per removed token decides its side (as removing them one by one would); the cuts
    are then made once, so the time is linear in the excess, not quadratic.
    """
    lengths, front, back = [len(a), len(b)], [0, 0], [0, 0]
    while lengths[0] + lengths[1] > max_tokens:
        i = 0 if lengths[0] > lengths[1] else 1
        if rng.random() < 0.5:
            front[i] += 1
        else:
            back[i] += 1
        lengths[i] -= 1
    for i, segment in enumerate((a, b)):
        del segment[len(segment) - back[i] :]
        del segment[: front[i]]


def make_example(a, b, label, settings, rng) -> dict:
    """[CLS] A [SEP] (B [SEP]) with segment ids, and its static MLM predictions."""
    cls, sep = settings["cls_id"], settings["sep_id"]
    tokens = [cls, *a, sep] + ([*b, sep] if b else [])
    token_types = [0] * (len(a) + 2) + [1] * (len(b) + 1 if b else 0)
    candidates = [i for i, token in enumerate(tokens) if token not in (cls, sep)]
    rng.shuffle(candidates)
    count = min(
        settings["max_predictions"], max(1, round(len(tokens) * settings["mlm_probability"]))
    )
    positions = sorted(candidates[:count])
    originals = [tokens[p] for p in positions]
    for p in positions:
        draw = rng.random()
        if draw < 0.8:
            tokens[p] = settings["mask_id"]
        elif draw < 0.9:
            tokens[p] = rng.choice(settings["replacement_ids"])
    padding = [0] * (settings["max_predictions"] - len(positions))
    return {
        "input_ids": tokens,
        "token_type_ids": token_types,
        "attention_mask": [1] * len(tokens),
        "masked_lm_positions": positions + padding,
        "masked_lm_ids": originals + padding,
        "masked_lm_weights": [1.0] * len(positions) + [0.0] * len(padding),
        "next_sentence_label": label,
    }


def collate_pretraining(batch: list[dict]) -> dict:
    """Stack examples into tensors, padding the sequences (with 0) to the longest in the batch.

    The padding id does not matter: padded positions have attention_mask 0 and are never masked.
    """
    import torch

    longest = max(len(example["input_ids"]) for example in batch)
    tensors = padded_inputs(batch, longest, pad_token_id=0)
    for name in ("masked_lm_positions", "masked_lm_ids"):
        tensors[name] = torch.tensor([e[name] for e in batch], dtype=torch.long)
    tensors["masked_lm_weights"] = torch.tensor(
        [e["masked_lm_weights"] for e in batch], dtype=torch.float
    )
    tensors["next_sentence_label"] = torch.tensor(
        [e["next_sentence_label"] for e in batch], dtype=torch.long
    )
    return tensors
