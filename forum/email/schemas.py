from __future__ import annotations

import enum

import msgspec

from forum.models import EmailFrequency


class EmailLanguage(enum.StrEnum):
    EN = "en"
    ES = "es"


class EmailPreferences(msgspec.Struct):
    frequency: EmailFrequency
    """``each``: every notification by email; ``daily``: one digest a day; ``none``: no email (the inbox stays)."""
    language: EmailLanguage
    """The language of your emails: your choice, else the language of your latest post (else English)."""
    language_chosen: bool
    """Whether ``language`` is your choice or worked out from your posts."""


class EmailPreferencesUpdate(msgspec.Struct, forbid_unknown_fields=True):
    frequency: EmailFrequency | msgspec.UnsetType = msgspec.UNSET
    language: EmailLanguage | msgspec.UnsetType = msgspec.UNSET
