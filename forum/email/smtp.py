"""Sending through SMTP (aiosmtplib), configured by one URL: ``FORUM_SMTP_URL``."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

TIMEOUT_SECONDS = 20.0


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    use_tls: bool = False
    """``smtps://``: TLS from the first byte (port 465)."""
    start_tls: bool | None = None
    """``smtp://``: None upgrades when the server offers STARTTLS; ``?starttls=true`` requires it, ``false`` never."""

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(f"FORUM_SMTP_URL must be smtp://[user:pass@]host[:port] or smtps://…, got {url!r}")
        option = (parse_qs(parts.query).get("starttls") or [""])[0].lower()
        start_tls = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(option)
        secure = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if secure else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=secure,
            start_tls=False if secure else start_tls,
        )


@dataclass(frozen=True)
class Mailer:
    """What the worker needs to email people: the server, the sender, the forum's public URL for links,
    and the key that signs unsubscribe links."""

    server: SmtpServer
    sender: str
    public_url: str
    unsubscribe_key: bytes

    @classmethod
    def from_settings(cls, settings: object, secret: str) -> Mailer | None:
        url = getattr(settings, "smtp_url", None)
        if not url:
            return None
        return cls(
            server=SmtpServer.from_url(url),
            sender=settings.email_from,  # type: ignore[attr-defined]
            public_url=settings.public_url.rstrip("/"),  # type: ignore[attr-defined]
            unsubscribe_key=unsubscribe_key(secret),
        )

    async def send(self, message: EmailMessage) -> None:
        """Raises on any failure (refused connection, timeout, rejected recipient): the job is retried."""
        await aiosmtplib.send(
            message,
            hostname=self.server.host,
            port=self.server.port,
            username=self.server.username,
            password=self.server.password,
            use_tls=self.server.use_tls,
            start_tls=self.server.start_tls,
            timeout=TIMEOUT_SECONDS,
        )


def unsubscribe_key(secret: str) -> bytes:
    """A key of its own for unsubscribe links, derived from the app secret."""
    return hmac.new(secret.encode(), b"forum-unsubscribe", hashlib.sha256).digest()
