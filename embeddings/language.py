"""Language identification of posts, to route each pair of posts to the right encoder.

Uses `lingua-language-detector <https://github.com/pemistahl/lingua-py>`_ (its
language models are compiled into the wheel: nothing is downloaded, ever).  The
detector only considers :data:`LANGUAGES` (English, Spanish, Portuguese,
French, Catalan), the languages our users write plus their closest neighbours,
so that a Spanish post with a few Portuguese-looking words is still told apart
from English; fewer candidate languages also make it faster and more accurate.

Confidence rule (:func:`detect_language`), with ``p_en`` = lingua's confidence
that the text is English (confidences over the candidate languages sum to 1):

* ``p_en >= 0.5`` -> ``"en"``;
* ``p_en < 0.2`` (the text is non-English with confidence >= 0.8) -> the ISO
  639-1 code of the most likely language (``"es"``, ``"pt"``, ``"fr"``, ``"ca"``);
* otherwise, or when the text has no letters -> ``"und"`` (undetermined).

Routing treats ``"und"`` like ``"en"`` (:func:`is_english_route`): a post goes
to the multilingual path only when it is *confidently* non-English, so short or
technical English bug reports ("NameNode Access Time Precision": p_en 0.27)
stay on the English model.  Measured
on the DEV data (high-accuracy mode, first 1,000 characters of ``title + "\\n" + body``): 3 of
3,980 distinct bug-report texts leave the English route (one is written in Portuguese, one is about
German typos, and "Fix typo in ReconfigurationServlet" is read as Catalan), 12 are ``"und"``;
17 of 2,895 short Spanish STS sentences (0.6 %, full of English names such as "Matt Smith deja la
BBC") stay on the English route; none of the 1,467 English STS sentences leaves it;
and all 70 posts of the demo forum are classified correctly.  Mixed posts
("Quiero dark mode en la app": p_en 0.17) count as Spanish, which suits them:
the multilingual model reads both languages.

High-accuracy mode is used: low-accuracy mode is only ~1.2x faster here and
misclassifies short posts ("La app se cuelga al abrir el mapa" -> French,
"Export invoices as PDF" -> French).
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lingua import LanguageDetector

__all__ = [
    "ENGLISH",
    "LANGUAGES",
    "MAX_CHARS",
    "MAX_ENGLISH_CONFIDENCE_FOR_OTHER",
    "MIN_ENGLISH_CONFIDENCE",
    "UNDETERMINED",
    "detect_language",
    "detect_languages",
    "english_confidence",
    "is_english_route",
]

#: Candidate languages (ISO 639-1), in lingua's names.
LANGUAGES: tuple[str, ...] = ("en", "es", "pt", "fr", "ca")
ENGLISH = "en"
UNDETERMINED = "und"

#: ``p_en`` at or above which a text is English.
MIN_ENGLISH_CONFIDENCE = 0.5
#: ``p_en`` below which a text is confidently non-English.
MAX_ENGLISH_CONFIDENCE_FOR_OTHER = 0.2
#: Only the first characters are examined: the title comes first, and a few
#: sentences are enough (longer inputs cost time, not accuracy).
MAX_CHARS = 1000

_LETTER_RE = re.compile(r"[^\W\d_]", re.UNICODE)
_detector: LanguageDetector | None = None
_detector_lock = threading.Lock()


def _get_detector() -> LanguageDetector:
    global _detector
    if _detector is None:
        with _detector_lock:
            if _detector is None:
                from lingua import IsoCode639_1, LanguageDetectorBuilder

                codes = [getattr(IsoCode639_1, code.upper()) for code in LANGUAGES]
                # Preloading costs ~0.25 s more at build and no extra memory; without it the
                # n-gram models load during the first long texts (the first ~400 posts ran 6x slower).
                builder = LanguageDetectorBuilder.from_iso_codes_639_1(*codes)
                _detector = builder.with_preloaded_language_models().build()
    return _detector


@functools.lru_cache(maxsize=8192)
def _confidences(text: str) -> tuple[tuple[str, float], ...]:
    """``(iso code, confidence)`` for every candidate language, most likely first."""
    values = _get_detector().compute_language_confidence_values(text)
    return tuple((v.language.iso_code_639_1.name.lower(), float(v.value)) for v in values)


def _prepare(text: str) -> str | None:
    text = text[:MAX_CHARS].strip()
    return text if _LETTER_RE.search(text) else None


def english_confidence(text: str) -> float | None:
    """lingua's confidence (0..1) that ``text`` is English; ``None`` when it has no letters."""
    prepared = _prepare(text)
    if prepared is None:
        return None
    return dict(_confidences(prepared))[ENGLISH]


def detect_language(text: str) -> str:
    """ISO 639-1 code of ``text`` (``"en"``, ``"es"``, ``"pt"``, ``"fr"``, ``"ca"``) or ``"und"``.

    See the module docstring for the confidence rule.  Thread-safe (the
    detector is built once, on first use, ~0.5 s) and cached per text.  Pass
    the same text that is embedded (``text_for_embedding(title, body)``).
    """
    if not isinstance(text, str):
        raise TypeError(f"detect_language() takes a string, got {type(text).__name__}")
    prepared = _prepare(text)
    if prepared is None:
        return UNDETERMINED
    ranked = _confidences(prepared)
    p_en = dict(ranked)[ENGLISH]
    if p_en >= MIN_ENGLISH_CONFIDENCE:
        return ENGLISH
    if p_en < MAX_ENGLISH_CONFIDENCE_FOR_OTHER:
        return next(code for code, _ in ranked if code != ENGLISH)
    return UNDETERMINED


def detect_languages(texts: Sequence[str]) -> list[str]:
    """:func:`detect_language` of each text."""
    if isinstance(texts, str):
        raise TypeError("detect_languages() takes a sequence of strings, not a single string")
    return [detect_language(text) for text in texts]


def is_english_route(language: str) -> bool:
    """Whether a post in ``language`` counts as English for routing (``"en"`` or ``"und"``)."""
    return language in (ENGLISH, UNDETERMINED)
