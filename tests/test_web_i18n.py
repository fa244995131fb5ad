"""The catalogs: every text the pages can show has its Spanish, with the same placeholders, and the
reader's language is negotiated as browsers expect."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg

from forum.web import i18n

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _extracted() -> set[str | tuple[str, str]]:
    with (ROOT / "forum/web/babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2)}
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        ROOT, method_map, options_map, keywords=keywords
    ):
        found.add(message if isinstance(message, str) else tuple(message))
    return found


def test_every_page_text_has_its_spanish_with_the_same_placeholders() -> None:
    i18n.translations.cache_clear()
    spanish = i18n.translations("es")
    messages = _extracted()
    assert len(messages) > 150
    untranslated, mismatched = [], []
    for message in messages:
        if isinstance(message, tuple):
            singular, plural = message
            translated = [spanish.ngettext(singular, plural, n) for n in (1, 2)]
            if translated == [singular, plural] and singular != "%(num)s idea":
                untranslated.append(singular)
            originals = [singular, plural]
        else:
            translated, originals = [spanish.gettext(message)], [message]
            if translated[0] == message and message not in {"API", "Idea", "Ideas", "Error", "Detractor"}:
                untranslated.append(message)
        for original, text in zip(originals, translated, strict=True):
            if set(PLACEHOLDER.findall(original)) != set(PLACEHOLDER.findall(text)):
                mismatched.append((original, text))
    assert not untranslated, f"add these to forum/web/locale/es/LC_MESSAGES/messages.po: {sorted(untranslated)}"
    assert not mismatched


@pytest.mark.parametrize(
    ("cookie", "header", "expected"),
    [
        (None, "es-MX,es;q=0.9,en;q=0.8", "es"),
        (None, "fr-FR,fr;q=0.9,es;q=0.5,en;q=0.4", "es"),
        (None, "en-US,en;q=0.9,es;q=0.8", "en"),
        (None, "es;q=0.2,en;q=0.9", "en"),
        (None, "de-DE", "en"),
        (None, "*", "en"),
        (None, "", "en"),
        (None, "es;q=nonsense,en", "en"),
        ("es", "en-US", "es"),
        ("xx", "es", "es"),
    ],
)
def test_language_negotiation(cookie: str | None, header: str, expected: str) -> None:
    assert i18n.negotiate(cookie, header) == expected
