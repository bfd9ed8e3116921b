"""sparsebert: a command-line experiment runner for sparse attention in BERT (SparseBERT, ICML 2021)."""

__version__ = "0.1.0"
