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

Failures: a delivery that fails for good (every retry spent, or its destination refused) counts
against its webhook; one that succeeds resets the count. At ``FORUM_WEBHOOK_MAX_FAILURES`` failures in a
row the webhook is disabled (``disabled_at``) and every admin gets an in-app notification
(``webhook_disabled``); PATCHing it ``active`` again resets the count. Admins can send a test delivery
(event ``webhook.test``) and send a past delivery again (a new delivery, ``redelivery_of`` the old one,
with the same payload and an ``X-Forum-Redelivery-Of`` header).
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
import msgspec
from litestar.exceptions import NotFoundException
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forum.auth import SERVICE_PASSWORD_HASH
from forum.errors import ConflictError, UnprocessableError
from forum.models import ClusterMembership, MembershipState, Post, User, UserRole, Webhook, WebhookDelivery
from forum.notifications.services import notify_users
from forum.queue import enqueue
from forum.schemas import Page, timestamp
from forum.webhooks.schemas import (
    TEST_EVENT,
    DeliveryOut,
    WebhookCreate,
    WebhookCreated,
    WebhookEvent,
    WebhookOut,
    WebhookUpdate,
)

DELIVER_WEBHOOK = "webhook.deliver"
TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_FAILURES = 10
WEBHOOK_DISABLED = "webhook_disabled"
"""The notification kind every admin gets when a webhook is disabled after failing."""
IN_FLIGHT = ("pending", "retrying")


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
    return WebhookOut(
        id=hook.id,
        url=hook.url,
        events=hook.events,
        active=hook.active,
        created_at=hook.created_at,
        consecutive_failures=hook.consecutive_failures,
        disabled_at=hook.disabled_at,
    )


def _delivery_out(d: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=d.id,
        event=d.event,
        status=d.status,
        attempts=d.attempts,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        created_at=d.created_at,
        delivered_at=d.delivered_at,
        payload=d.payload,
        redelivery_of=d.redelivery_of_id,
    )


def _body(event: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"event": event, "occurred_at": timestamp(datetime.now(UTC)), "data": payload}


async def subscribers(session: AsyncSession, event: WebhookEvent) -> list[Webhook]:
    return list(await session.scalars(select(Webhook).where(Webhook.active.is_(True), Webhook.events.any(event.value))))


async def _queue(session: AsyncSession, deliveries: list[WebhookDelivery]) -> int:
    if not deliveries:
        return 0
    session.add_all(deliveries)
    await session.flush()
    await enqueue(session, DELIVER_WEBHOOK, [str(d.id) for d in deliveries])
    return len(deliveries)


async def emit(session: AsyncSession, event: WebhookEvent, payload: dict[str, Any]) -> int:
    """Queue ``event`` for every active webhook that wants it; returns how many deliveries."""
    hooks = await subscribers(session, event)
    if not hooks:
        return 0
    body = _body(event.value, payload)
    return await _queue(session, [WebhookDelivery(webhook_id=h.id, event=event.value, payload=body) for h in hooks])


async def emit_cluster_changed(
    session: AsyncSession, cluster_ids: list[UUID], change: str, post_id: UUID | None = None
) -> int:
    """One ``cluster.changed`` per cluster whose membership just changed (``change`` says how: grouped,
    consolidated, confirmed, rejected, moved, split, accepted), listing its current members with their
    visibility; ``post`` is the post that moved, if one did. Clusters left empty are not sent."""
    event = WebhookEvent.CLUSTER_CHANGED
    hooks = await subscribers(session, event)
    cluster_ids = list(dict.fromkeys(c for c in cluster_ids if c is not None))
    if not hooks or not cluster_ids:
        return 0
    member_columns = (ClusterMembership.post_id, ClusterMembership.state, Post.title, Post.visibility, Post.status)
    rows = await session.execute(
        select(ClusterMembership.cluster_id, *member_columns)
        .join(Post, Post.id == ClusterMembership.post_id)
        .where(
            ClusterMembership.cluster_id.in_(cluster_ids),
            ClusterMembership.state != MembershipState.REJECTED.value,
            Post.deleted_at.is_(None),
        )
        .order_by(ClusterMembership.cluster_id, Post.created_at, Post.id)
    )
    members: dict[UUID, list[dict[str, Any]]] = {}
    for row in rows:
        members.setdefault(row.cluster_id, []).append(
            {
                "post_id": str(row.post_id),
                "title": row.title,
                "visibility": row.visibility,
                "status": row.status,
                "state": row.state,
            }
        )
    moved = await session.get(Post, post_id) if post_id is not None else None
    post = (
        {"post_id": str(moved.id), "title": moved.title, "visibility": moved.visibility} if moved is not None else None
    )
    deliveries = []
    for cluster_id in cluster_ids:
        if cluster_id not in members:
            continue
        data = {"cluster_id": str(cluster_id), "change": change, "post": post, "members": members[cluster_id]}
        body = _body(event.value, data)
        deliveries += [WebhookDelivery(webhook_id=h.id, event=event.value, payload=body) for h in hooks]
    return await _queue(session, deliveries)


async def deliver(
    session_maker: async_sessionmaker[AsyncSession],
    delivery_id: UUID,
    allowed_hosts: list[str] | None = None,
    max_failures: int = DEFAULT_MAX_FAILURES,
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
        if delivery.redelivery_of_id is not None:
            headers["X-Forum-Redelivery-Of"] = str(delivery.redelivery_of_id)
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
            await _count_failure(session, hook.id, max_failures)
            await session.commit()
            return "refused"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:1000]
        delivery.last_error = error
        if error is None:
            delivery.status = "succeeded"
            delivery.delivered_at = datetime.now(UTC)
            if hook.consecutive_failures:
                hook.consecutive_failures = 0
        else:
            delivery.status = "retrying"
        await session.commit()
    if error is not None:
        raise RuntimeError(f"webhook delivery {delivery_id} failed: {error}")
    return "delivered"


async def mark_failed(
    session_maker: async_sessionmaker[AsyncSession], delivery_id: UUID, max_failures: int = DEFAULT_MAX_FAILURES
) -> None:
    """Every retry spent: the delivery failed for good, and counts against its webhook."""
    async with session_maker() as session, session.begin():
        delivery = await session.get(WebhookDelivery, delivery_id)
        if delivery is not None and delivery.status != "succeeded":
            delivery.status = "failed"
            await _count_failure(session, delivery.webhook_id, max_failures)


async def _count_failure(session: AsyncSession, webhook_id: UUID, max_failures: int) -> None:
    """One more failure in a row; at ``max_failures`` the webhook is disabled and the admins told."""
    row = (
        await session.execute(
            update(Webhook)
            .where(Webhook.id == webhook_id)
            .values(consecutive_failures=Webhook.consecutive_failures + 1)
            .returning(Webhook.consecutive_failures, Webhook.active, Webhook.url)
            .execution_options(synchronize_session=False)
        )
    ).first()
    if row is None or not row.active or row.consecutive_failures < max_failures:
        return
    await session.execute(
        update(Webhook)
        .where(Webhook.id == webhook_id, Webhook.active.is_(True))
        .values(active=False, disabled_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )
    admins = await session.scalars(
        select(User.id).where(
            User.role == UserRole.ADMIN.value, User.is_active.is_(True), User.password_hash != SERVICE_PASSWORD_HASH
        )
    )
    payload = {"webhook_id": str(webhook_id), "url": row.url, "consecutive_failures": row.consecutive_failures}
    await notify_users(session, list(admins), WEBHOOK_DISABLED, payload, post_id=None)


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
        return WebhookCreated(**msgspec.structs.asdict(_out(hook)), secret=hook.secret)

    async def list(self) -> list[WebhookOut]:
        return [_out(h) for h in await self.session.scalars(select(Webhook).order_by(Webhook.created_at))]

    async def _get(self, webhook_id: UUID, *, for_update: bool = False) -> Webhook:
        hook = await self.session.get(Webhook, webhook_id, with_for_update=for_update)
        if hook is None:
            raise NotFoundException("Webhook not found")
        return hook

    async def get(self, webhook_id: UUID) -> WebhookOut:
        return _out(await self._get(webhook_id))

    async def update(self, webhook_id: UUID, data: WebhookUpdate) -> WebhookOut:
        hook = await self._get(webhook_id, for_update=True)
        if data.url is not msgspec.UNSET:
            try:
                await check_destination(data.url, self.allowed_hosts)
            except DestinationRefused as exc:
                raise UnprocessableError(str(exc), field="url") from exc
            hook.url = data.url
        if data.events is not msgspec.UNSET:
            hook.events = sorted({e.value for e in data.events})
        if data.secret is not msgspec.UNSET:
            hook.secret = data.secret
        if data.active is not msgspec.UNSET and data.active != hook.active:
            hook.active = data.active
            hook.consecutive_failures, hook.disabled_at = 0, None  # a fresh start, or switched off by hand
        await self.session.flush()
        await self.session.refresh(hook)
        return _out(hook)

    async def delete(self, webhook_id: UUID) -> None:
        await self.session.delete(await self._get(webhook_id))

    async def _active(self, webhook_id: UUID) -> Webhook:
        hook = await self._get(webhook_id)
        if not hook.active:
            raise ConflictError(detail="This webhook is disabled: PATCH it active first")
        return hook

    async def send_test(self, webhook_id: UUID, admin: User) -> DeliveryOut:
        """Queue a ``webhook.test`` delivery, signed and retried like any other."""
        hook = await self._active(webhook_id)
        payload = {
            "webhook_id": str(hook.id),
            "requested_by": {"id": str(admin.id), "display_name": admin.display_name},
            "message": "A test delivery from forum",
        }
        delivery = WebhookDelivery(webhook_id=hook.id, event=TEST_EVENT, payload=_body(TEST_EVENT, payload))
        await _queue(self.session, [delivery])
        await self.session.refresh(delivery)
        return _delivery_out(delivery)

    async def redeliver(self, webhook_id: UUID, delivery_id: UUID) -> DeliveryOut:
        """Send a past delivery again, as a new delivery with the same event and payload."""
        hook = await self._active(webhook_id)
        past = await self.session.scalar(
            select(WebhookDelivery).where(WebhookDelivery.id == delivery_id, WebhookDelivery.webhook_id == hook.id)
        )
        if past is None:
            raise NotFoundException("Delivery not found")
        if past.status in IN_FLIGHT:
            raise ConflictError(detail=f"This delivery is still {past.status}: wait for it to succeed or fail")
        again = WebhookDelivery(webhook_id=hook.id, event=past.event, payload=past.payload, redelivery_of_id=past.id)
        await _queue(self.session, [again])
        await self.session.refresh(again)
        return _delivery_out(again)

    async def deliveries(self, webhook_id: UUID, limit: int, offset: int) -> Page[DeliveryOut]:
        await self._get(webhook_id)
        condition = WebhookDelivery.webhook_id == webhook_id
        rows = list(
            await self.session.scalars(
                select(WebhookDelivery)
                .where(condition)
                .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
                .limit(limit)
                .offset(offset)
            )
        )
        total = await self.session.scalar(select(func.count(WebhookDelivery.id)).where(condition)) or 0
        return Page(items=[_delivery_out(d) for d in rows], total=total, limit=limit, offset=offset)
