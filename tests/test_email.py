"""Notifications by email: a real SMTP server (aiosmtpd) on a free port, the real job queue and worker,
and what arrived read back: language, text, links, unsubscribe headers; daily digests; none; and an SMTP
server that is down while the request that caused the email is answered at once."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from forum.app import create_app
from forum.email.services import SEND_DIGESTS
from forum.email.smtp import Mailer
from forum.encoding import PostEmbedder, get_encoder
from forum.queue import enqueue
from forum.settings import Settings
from forum.worker import BackgroundWorker
from tests.conftest import Actor, Api, run_sql
from tests.e2e import free_port


class Inbox:
    """What the SMTP server received, parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))  # type: ignore[arg-type]
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if address in m["To"]]


class SmtpServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.inbox = Inbox()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def smtp(smtp_server: SmtpServer) -> Iterator[SmtpServer]:
    smtp_server.inbox.messages.clear()
    if smtp_server.controller is None:
        smtp_server.start()
    yield smtp_server
    if smtp_server.controller is None:
        smtp_server.start()


@pytest.fixture
def settings(settings: Settings, smtp: SmtpServer) -> Settings:
    return dataclasses.replace(
        settings,
        smtp_url=f"smtp://127.0.0.1:{smtp.port}",
        email_from="forum@example.com",
        public_url="https://forum.example.com",
    )


@pytest.fixture
def mail(settings: Settings, drain):
    """Run the worker, with email, until the queue is empty."""
    mailer = Mailer.from_settings(settings, settings.jwt_secret())
    return lambda: drain(mailer=mailer)


def _ship_news(api: Api, author: Actor, title: str, status: str = "planned", note: str | None = None) -> dict:
    post = api.post(author, title=title)
    product = api.make_user("internal", "product")
    body = {"status": status, **({"note": note} if note else {})}
    r = api.client.post(f"/api/posts/{post['id']}/status", json=body, headers=product.headers)
    assert r.status_code == 200, r.text
    return post


def _parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None, "a plain-text and an HTML part"
    return text.get_content(), html.get_content()


def test_a_status_change_reaches_each_follower_by_email_in_their_language(api: Api, smtp: SmtpServer, mail) -> None:
    ana = api.register("ana")
    api.post(ana, title="Quiero modo oscuro en la aplicación del móvil", body="Por la noche la pantalla molesta")
    bob = api.register("bob")
    es_post = _ship_news(api, ana, "Facturas en PDF para mi contable", note="Lo haremos en marzo")
    en_post = _ship_news(api, bob, "Export invoices as a PDF file", note="Coming in March")
    processed = mail()
    assert processed.get("email_sent") == 2

    [spanish] = smtp.inbox.to(ana.email)
    assert spanish["Subject"] == "“Facturas en PDF para mi contable” ahora está planificada"
    assert spanish["Content-Language"] == "es"
    text, html = _parts(spanish)
    assert "Hola ana," in text and "Nota del equipo: Lo haremos en marzo" in text
    assert f"https://forum.example.com/posts/{es_post['id']}" in text
    assert f'href="https://forum.example.com/posts/{es_post["id"]}"' in html and "Ver la publicación" in html
    assert "Darse de baja con un clic:" in text

    [english] = smtp.inbox.to(bob.email)
    assert english["Subject"] == "“Export invoices as a PDF file” is now planned"
    text, html = _parts(english)
    assert "Hello bob," in text and "Note from the team: Coming in March" in text
    assert f"https://forum.example.com/posts/{en_post['id']}" in text and "See the post" in html

    for message in (spanish, english):
        link = message["List-Unsubscribe"]
        assert link.startswith("<https://forum.example.com/email/unsubscribe/") and link.endswith(">")
        assert link[1:-1] in _parts(message)[0] and link[1:-1] in _parts(message)[1]
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["From"] == "forum@example.com"
    assert smtp.inbox.to(ana.email)[0]["List-Unsubscribe"] != english["List-Unsubscribe"]

    assert mail().get("email_sent") is None, "a second run sends nothing twice"
    assert len(smtp.inbox.messages) == 2
    # The inbox still has them.
    assert api.client.get("/api/me/notifications", headers=ana.headers).json()["total"] == 1


def test_the_one_click_unsubscribe_link_needs_no_login(api: Api, smtp: SmtpServer, mail) -> None:
    ana = api.register("ana")
    api.post(ana, title="Quiero pagar con tarjeta regalo en la tienda")
    _ship_news(api, ana, "Quiero exportar mis facturas a Excel")
    mail()
    [message] = smtp.inbox.to(ana.email)
    url = message["List-Unsubscribe"][1:-1]
    path = url.removeprefix("https://forum.example.com")

    page = api.client.get(path)  # opening it (or a scanner following it) only asks
    assert page.status_code == 200 and "¿Dejar de enviar correos" in page.text and ana.email in page.text
    prefs = api.client.get("/api/me/email-preferences", headers=ana.headers).json()
    assert prefs == {"frequency": "each", "language": "es", "language_chosen": False}

    tampered = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    assert api.client.post(tampered, content=b"List-Unsubscribe=One-Click").status_code == 404

    r = api.client.post(
        path, content=b"List-Unsubscribe=One-Click", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 200 and "no recibirá más correos" in r.text
    assert api.client.get("/api/me/email-preferences", headers=ana.headers).json()["frequency"] == "none"

    _ship_news(api, ana, "Quiero ver mis pedidos antiguos")
    mail()
    assert len(smtp.inbox.to(ana.email)) == 1, "no email after unsubscribing"
    assert api.client.get("/api/me/notifications", headers=ana.headers).json()["total"] == 2


def test_preferences_are_read_and_changed_through_the_api(api: Api) -> None:
    ana = api.register("ana")
    r = api.client.patch(
        "/api/me/email-preferences", json={"frequency": "daily", "language": "es"}, headers=ana.headers
    )
    assert r.status_code == 200 and r.json() == {"frequency": "daily", "language": "es", "language_chosen": True}
    bad = api.client.patch("/api/me/email-preferences", json={"frequency": "weekly"}, headers=ana.headers)
    assert bad.status_code in (400, 422) and bad.headers["content-type"].startswith("application/problem+json")
    assert api.client.get("/api/me/email-preferences").status_code == 401


def _enqueue_digest(database_url: str) -> None:
    async def run() -> None:
        engine = create_async_engine(database_url, poolclass=NullPool)
        try:
            async with async_sessionmaker(engine)() as session, session.begin():
                await enqueue(session, SEND_DIGESTS, ["daily"], dedupe=True)
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_daily_gets_one_digest_and_no_single_emails_and_none_gets_nothing(
    api: Api, smtp: SmtpServer, mail, database_url: str
) -> None:
    daily, silent = api.register("daily"), api.register("silent")
    for person, frequency in ((daily, "daily"), (silent, "none")):
        r = api.client.patch("/api/me/email-preferences", json={"frequency": frequency}, headers=person.headers)
        assert r.status_code == 200
    first = _ship_news(api, daily, "Dark mode for the mobile app")
    _ship_news(api, daily, "Two-factor login with an app", status="under_review")
    _ship_news(api, silent, "Keyboard shortcuts everywhere")
    processed = mail()
    assert processed.get("email_sent") is None and smtp.inbox.messages == []

    _enqueue_digest(database_url)
    assert mail().get("email_digests") == 1
    [digest] = smtp.inbox.to(daily.email)
    assert digest["Subject"] == "Your day on the forum: 2 updates"
    text, html = _parts(digest)
    assert "“Dark mode for the mobile app” is now planned" in text
    assert "“Two-factor login with an app” is now under review" in text
    assert f"https://forum.example.com/posts/{first['id']}" in html
    assert digest["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert smtp.inbox.to(silent.email) == []

    _enqueue_digest(database_url)
    mail()
    assert len(smtp.inbox.messages) == 1, "the next digest does not repeat what was sent"


class ThreadedWorker:
    """The worker running continuously in a thread of its own, as in `forum serve`."""

    def __init__(self, worker: BackgroundWorker) -> None:
        self.worker = worker
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=lambda: self.loop.run_until_complete(worker.run()), daemon=True)

    def __enter__(self) -> ThreadedWorker:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.loop.call_soon_threadsafe(self.worker.stop)
        self.thread.join(timeout=30)


def _wait(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_an_smtp_server_that_is_down_leaves_the_email_queued_and_retried(
    api: Api, smtp: SmtpServer, settings: Settings, database_url: str
) -> None:
    ana = api.register("ana")
    smtp.stop()
    started = time.monotonic()
    _ship_news(api, ana, "Invoices in PDF for the accountant")  # answered 200 without an SMTP server
    assert time.monotonic() - started < 10
    worker = BackgroundWorker(
        database_url,
        PostEmbedder(get_encoder(settings.embedding_model)),
        settings.duplicate_threshold,
        mailer=Mailer.from_settings(settings, settings.jwt_secret()),
        email_retry_delay=timedelta(seconds=1),
    )

    def email_job() -> list:
        return run_sql(database_url, "SELECT status, attempts FROM pgqueuer WHERE entrypoint = 'email.notification'")

    with ThreadedWorker(worker):
        _wait(lambda: email_job() and email_job()[0].attempts >= 1)
        assert email_job()[0].status == "queued", "kept for another try"
        assert smtp.inbox.messages == []
        smtp.start()
        _wait(lambda: len(smtp.inbox.messages) == 1)
    [message] = smtp.inbox.messages
    assert "Invoices in PDF for the accountant" in message["Subject"]
    assert email_job() == [], "done: the job is gone"


def test_without_smtp_nothing_is_queued(api: Api, settings: Settings, database_url: str) -> None:
    from litestar.testing import TestClient

    with TestClient(app=create_app(dataclasses.replace(settings, smtp_url=None))) as client:
        plain = Api(client, database_url)
        ana = plain.register("ana")
        _ship_news(plain, ana, "Invoices in PDF without email")
        assert client.get("/api/me/notifications", headers=ana.headers).json()["total"] == 1
    assert run_sql(database_url, "SELECT count(*) FROM pgqueuer WHERE entrypoint LIKE 'email.%'")[0][0] == 0


def test_the_inbox_page_changes_the_email_preferences(api: Api) -> None:
    from tests.test_web_pages import browser_login, form_post

    ana = api.register("ana")
    browser_login(api.client, ana)
    page = api.client.get("/inbox", headers={"Accept-Language": "es"})
    assert page.status_code == 200 and "Enviarme los avisos por correo" in page.text
    assert 'value="each" checked' in page.text
    r = form_post(api.client, "/inbox/email", {"frequency": "daily", "language": "es"}, from_page="/inbox")
    assert r.status_code == 303 and r.headers["location"] == "/inbox"
    prefs = api.client.get("/api/me/email-preferences", headers=ana.headers).json()
    assert prefs == {"frequency": "daily", "language": "es", "language_chosen": True}
    assert 'value="daily" checked' in api.client.get("/inbox").text
    r = form_post(api.client, "/inbox/email", {"frequency": "hourly"}, from_page="/inbox")
    assert r.status_code == 303
    assert api.client.get("/api/me/email-preferences", headers=ana.headers).json()["frequency"] == "daily"
