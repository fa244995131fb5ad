"""Sentence embeddings for grouping near-duplicate posts.

Self-contained (no dependency on the ``forum`` application)::

    from embeddings import load_encoder, text_for_embedding, top_k

    encoder = load_encoder(None)  # bundled all-MiniLM-L6-v2, offline, loaded lazily
    vectors = encoder.encode([text_for_embedding(title, body) for title, body in posts])

Importing this package does not import torch; the real model is loaded on first use.
"""

from .encoder import (
    DEFAULT_MODEL_NAME,
    Encoder,
    HashingEncoder,
    SentenceTransformerEncoder,
    load_encoder,
    text_for_embedding,
)
from .evaluation import (
    average_precision,
    best_f1,
    evaluate_corpus,
    evaluate_file,
    evaluate_pairs,
    format_json_line,
    roc_auc,
    spearman,
)
from .similarity import cosine_matrix, paired_cosine, top_k

__all__ = [
    "DEFAULT_MODEL_NAME",
    "Encoder",
    "HashingEncoder",
    "SentenceTransformerEncoder",
    "average_precision",
    "best_f1",
    "cosine_matrix",
    "evaluate_corpus",
    "evaluate_file",
    "evaluate_pairs",
    "format_json_line",
    "load_encoder",
    "paired_cosine",
    "roc_auc",
    "spearman",
    "text_for_embedding",
    "top_k",
]
