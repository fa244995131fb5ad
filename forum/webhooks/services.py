"""Outgoing webhooks: admins register URLs; events are delivered by the job queue, signed, with retries.

Each event creates one delivery row per subscribed webhook and one ``webhook.deliver`` job, in the same
transaction as the change. The worker POSTs the JSON payload with ``X-Forum-Event``,
``X-Forum-Delivery``, ``X-Forum-Timestamp`` and ``X-Forum-Signature: sha256=HMAC(secret,
"{timestamp}.{body}")``; a non-2xx answer or a network error is retried with backoff, and every attempt
is recorded on the delivery.

Destinations: a webhook may not target loopback, private, link-local (cloud metadata at 169.254.169.254),
unique-local, multicast or unspecified addresses, IPv4 or IPv6, whether written as an address or as a
name that resolves there, unless ``FORUM_WEBHOOK_ALLOWED_HOSTS`` lists the host name or a network that
contains the address. The rule is checked when the webhook is created (422) and again at every delivery,
which then connects to the very address it checked (no second DNS answer can rebind it).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
from litestar.exceptions import NotFoundException
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forum.errors import UnprocessableError
from forum.models import User, Webhook, WebhookDelivery
from forum.queue import enqueue
from forum.schemas import Page, timestamp
from forum.webhooks.schemas import DeliveryOut, WebhookCreate, WebhookCreated, WebhookEvent, WebhookOut

DELIVER_WEBHOOK = "webhook.deliver"
TIMEOUT_SECONDS = 10.0


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DestinationRefused(Exception):
    """The webhook URL points where webhooks may not go."""


class HostDoesNotResolve(DestinationRefused):
    """Refused when a webhook is registered; at delivery, a failure like any other (retried)."""


def _public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _allowed(host: str, address: IPAddress, allowed_hosts: list[str]) -> bool:
    for entry in allowed_hosts:
        if entry.lower() == host:
            return True
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


async def check_destination(url: str, allowed_hosts: list[str]) -> list[str]:
    """The addresses ``url`` resolves to, all of them allowed; raises DestinationRefused otherwise."""
    try:
        parsed = httpx.URL(url)
        host = parsed.host.lower()  # decoded lazily: an invalid IDNA name raises here
    except (httpx.InvalidURL, ValueError) as exc:  # IDNA errors are ValueErrors
        raise DestinationRefused(f"not a valid URL: {exc}") from exc
    if not host:
        raise DestinationRefused("the URL has no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:  # socket.gaierror is an OSError; IDNA errors are ValueErrors
        raise HostDoesNotResolve(f"the host {host} does not resolve") from exc
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
    for address in addresses:
        if not _public(address) and not _allowed(host, address, allowed_hosts):
            raise DestinationRefused(
                f"{host} resolves to {address}, a loopback, private, link-local or reserved address "
                "(allow it with FORUM_WEBHOOK_ALLOWED_HOSTS)"
            )
    return [str(address) for address in addresses]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _out(hook: Webhook) -> WebhookOut:
    return WebhookOut(id=hook.id, url=hook.url, events=hook.events, active=hook.active, created_at=hook.created_at)


async def emit(session: AsyncSession, event: WebhookEvent, payload: dict[str, Any]) -> int:
    """Queue ``event`` for every active webhook that wants it; returns how many deliveries."""
    hooks = list(
        await session.scalars(select(Webhook).where(Webhook.active.is_(True), Webhook.events.any(event.value)))
    )
    if not hooks:
        return 0
    body = {"event": event.value, "occurred_at": timestamp(datetime.now(UTC)), "data": payload}
    deliveries = [WebhookDelivery(webhook_id=h.id, event=event.value, payload=body) for h in hooks]
    session.add_all(deliveries)
    await session.flush()
    await enqueue(session, DELIVER_WEBHOOK, [str(d.id) for d in deliveries])
    return len(deliveries)


async def deliver(
    session_maker: async_sessionmaker[AsyncSession], delivery_id: UUID, allowed_hosts: list[str] | None = None
) -> str:
    """One attempt; raises on failure so the queue retries it with backoff. A destination that is no
    longer allowed (its name resolves elsewhere now) fails the delivery at once, without retries."""
    async with session_maker() as session:
        delivery = await session.get(WebhookDelivery, delivery_id)
        hook = await session.get(Webhook, delivery.webhook_id) if delivery else None
        if delivery is None or hook is None or delivery.status == "succeeded":
            return "skipped"
        if not hook.active:
            delivery.status = "canceled"
            await session.commit()
            return "canceled"
        body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "forum-webhooks",
            "X-Forum-Event": delivery.event,
            "X-Forum-Delivery": str(delivery.id),
            "X-Forum-Timestamp": timestamp,
            "X-Forum-Signature": "sha256=" + sign(hook.secret, timestamp, body),
        }
        delivery.attempts += 1
        error: str | None = None
        try:
            addresses = await check_destination(hook.url, allowed_hosts or [])  # parses the URL first
            url = httpx.URL(hook.url)
            headers["Host"] = url.netloc.decode("ascii")
            extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
            async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS, follow_redirects=False) as client:
                pinned = url.copy_with(host=addresses[0])  # the address just checked, not a new lookup
                response = await client.post(pinned, content=body, headers=headers, extensions=extensions)
            delivery.last_status_code = response.status_code
            if not response.is_success:
                error = f"HTTP {response.status_code}"
        except HostDoesNotResolve as exc:
            error = str(exc)
        except DestinationRefused as exc:
            delivery.status, delivery.last_error = "failed", f"refused: {exc}"[:1000]
            await session.commit()
            return "refused"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:1000]
        delivery.last_error = error
        if error is None:
            delivery.status = "succeeded"
            delivery.delivered_at = datetime.now(UTC)
        else:
            delivery.status = "retrying"
        await session.commit()
    if error is not None:
        raise RuntimeError(f"webhook delivery {delivery_id} failed: {error}")
    return "delivered"


async def mark_failed(session_maker: async_sessionmaker[AsyncSession], delivery_id: UUID) -> None:
    async with session_maker() as session, session.begin():
        delivery = await session.get(WebhookDelivery, delivery_id)
        if delivery is not None and delivery.status != "succeeded":
            delivery.status = "failed"


class WebhookService:
    def __init__(self, session: AsyncSession, allowed_hosts: list[str] | None = None) -> None:
        self.session = session
        self.allowed_hosts = allowed_hosts or []

    async def create(self, data: WebhookCreate, admin: User) -> WebhookCreated:
        try:
            await check_destination(data.url, self.allowed_hosts)
        except DestinationRefused as exc:
            raise UnprocessableError(str(exc), field="url") from exc
        hook = Webhook(
            url=data.url,
            secret=data.secret or secrets.token_urlsafe(32),
            events=sorted({e.value for e in data.events}),
            created_by_id=admin.id,
        )
        self.session.add(hook)
        await self.session.flush()
        await self.session.refresh(hook)
        return WebhookCreated(
            id=hook.id,
            url=hook.url,
            events=hook.events,
            active=hook.active,
            created_at=hook.created_at,
            secret=hook.secret,
        )

    async def list(self) -> list[WebhookOut]:
        return [_out(h) for h in await self.session.scalars(select(Webhook).order_by(Webhook.created_at))]

    async def _get(self, webhook_id: UUID) -> Webhook:
        hook = await self.session.get(Webhook, webhook_id)
        if hook is None:
            raise NotFoundException("Webhook not found")
        return hook

    async def delete(self, webhook_id: UUID) -> None:
        await self.session.delete(await self._get(webhook_id))

    async def deliveries(self, webhook_id: UUID, limit: int, offset: int) -> Page[DeliveryOut]:
        await self._get(webhook_id)
        condition = WebhookDelivery.webhook_id == webhook_id
        rows = list(
            await self.session.scalars(
                select(WebhookDelivery)
                .where(condition)
                .order_by(WebhookDelivery.created_at.desc())
                .limit(limit)
                .offset(offset)
            )
        )
        total = await self.session.scalar(select(func.count(WebhookDelivery.id)).where(condition)) or 0
        items = [
            DeliveryOut(
                id=d.id,
                event=d.event,
                status=d.status,
                attempts=d.attempts,
                last_status_code=d.last_status_code,
                last_error=d.last_error,
                created_at=d.created_at,
                delivered_at=d.delivered_at,
                payload=d.payload,
            )
            for d in rows
        ]
        return Page(items=items, total=total, limit=limit, offset=offset)
