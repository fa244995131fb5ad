"""Load the demo forum from ``sample.json``: users, backdated posts, votes, comments and status history.

Everything is derived deterministically from the sample and ``now`` (times come from hashes of the
sample keys, never from a random generator), so two loads with the same ``now`` produce the same
timeline. The rows are written with a handful of bulk INSERTs on the caller's session, in the
caller's transaction; the caller commits. The counters kept on each post row (votes split by the
voter's kind, public comments, internal notes) and the per-day vote buckets are computed here from
the very rows that are inserted, so they are exact.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from forum.accounts.schemas import UserRegister
from forum.auth import hash_password
from forum.credits.services import ShipService
from forum.demo.survey import load_demo_survey
from forum.models import (
    Comment,
    Post,
    PostKind,
    PostStatus,
    PostVoteDay,
    StatusChange,
    Subscription,
    User,
    UserKind,
    UserRole,
    Visibility,
    Vote,
)
from forum.posts.schemas import CommentCreate, PostCreate

DEFAULT_SAMPLE_PATH = Path(__file__).with_name("sample.json")

# Serialises concurrent demo loads: the second waits, then finds the users and loads nothing.
_ADVISORY_LOCK_KEY = 0x666F72756D_64656D  # "forum" "dem"
# Posts on the same day differ by up to this much (always earlier than ``days_ago`` exactly).
_POST_OFFSET = timedelta(hours=10)
_COMMENT_OFFSET = timedelta(hours=10)

# The road a post travels from "open" to each status.
_STATUS_PATHS: dict[str, tuple[str, ...]] = {
    PostStatus.OPEN.value: (),
    PostStatus.UNDER_REVIEW.value: ("under_review",),
    PostStatus.PLANNED.value: ("under_review", "planned"),
    PostStatus.IN_PROGRESS.value: ("under_review", "planned", "in_progress"),
    PostStatus.SHIPPED.value: ("under_review", "planned", "in_progress", "shipped"),
    PostStatus.DECLINED.value: ("under_review", "declined"),
    PostStatus.DUPLICATE.value: ("duplicate",),
}


@dataclass
class DemoSummary:
    """What :func:`load_demo` did.

    ``users``, ``posts``, ``votes`` and ``comments`` (internal notes included) count the rows this call
    inserted: all zero when ``created`` is False because the demo was already there. ``groups`` is the
    number of duplicate groups in the sample. ``post_ids_by_key`` maps sample post keys to database ids
    (found again by author and title when the demo was already loaded); ``groups_by_key`` maps every
    sample post key to its duplicate-group label, or None.
    """

    created: bool
    users: int
    posts: int
    votes: int
    comments: int
    groups: int
    post_ids_by_key: dict[str, UUID] = field(default_factory=dict)
    groups_by_key: dict[str, str | None] = field(default_factory=dict)


# The sample ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleUser:
    key: str
    email: str
    display_name: str
    kind: str
    role: str

    @property
    def sees_internal(self) -> bool:
        return self.kind == UserKind.INTERNAL.value or self.role != UserRole.MEMBER.value

    @property
    def is_product_team(self) -> bool:
        return self.role in (UserRole.PRODUCT.value, UserRole.ADMIN.value)


@dataclass(frozen=True)
class SampleComment:
    author: str
    body: str
    days_ago: int
    internal: bool


@dataclass(frozen=True)
class SamplePost:
    key: str
    author: str
    kind: str
    title: str
    body: str
    tags: tuple[str, ...]
    visibility: str
    status: str
    language: str | None
    days_ago: int
    group: str | None
    voters: tuple[str, ...]
    comments: tuple[SampleComment, ...]


@dataclass(frozen=True)
class Sample:
    users: tuple[SampleUser, ...]
    posts: tuple[SamplePost, ...]

    @property
    def groups(self) -> set[str]:
        return {p.group for p in self.posts if p.group}


def _days_ago(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{where}: days_ago must be a non-negative integer")
    return value


def read_sample(path: Path | None = None) -> Sample:
    """Read and check the sample: every text must pass the API's own rules, every reference must
    resolve, and internal content may involve only users who can see it. Raises ValueError."""
    raw = json.loads((path or DEFAULT_SAMPLE_PATH).read_text(encoding="utf-8"))
    users: dict[str, SampleUser] = {}
    emails: set[str] = set()
    for i, u in enumerate(raw.get("users", [])):
        where = f"users[{i}] ({u.get('key')})"
        try:
            # A placeholder password: only the email and display name rules matter here.
            reg = msgspec.convert(
                {"email": u["email"], "password": "x" * 8, "display_name": u["display_name"]}, UserRegister
            )
            kind, role = UserKind(u.get("kind", "external")).value, UserRole(u.get("role", "member")).value
        except (KeyError, ValueError, msgspec.ValidationError) as exc:
            raise ValueError(f"{where}: {exc}") from exc
        if u["key"] in users or reg.email in emails:
            raise ValueError(f"{where}: duplicate key or email")
        emails.add(reg.email)
        users[u["key"]] = SampleUser(u["key"], reg.email, reg.display_name, kind, role)

    posts: list[SamplePost] = []
    for i, p in enumerate(raw.get("posts", [])):
        where = f"posts[{i}] ({p.get('key')})"
        try:
            data = msgspec.convert(
                {
                    "kind": p["kind"],
                    "title": p["title"],
                    "body": p.get("body", ""),
                    "tags": p.get("tags", []),
                    "visibility": p.get("visibility", "public"),
                },
                PostCreate,
            )
            status = PostStatus(p.get("status", "open")).value
        except (KeyError, ValueError, msgspec.ValidationError) as exc:
            raise ValueError(f"{where}: {exc}") from exc
        internal_post = data.visibility is Visibility.INTERNAL
        voters = tuple(p.get("voters", []))
        for key in (p["author"], *voters):
            if key not in users:
                raise ValueError(f"{where}: unknown user {key!r}")
            if internal_post and not users[key].sees_internal:
                raise ValueError(f"{where}: {key} cannot see an internal post")
        if len(set(voters)) != len(voters):
            raise ValueError(f"{where}: a user votes at most once per post")
        comments = []
        for j, c in enumerate(p.get("comments", [])):
            cwhere = f"{where}.comments[{j}]"
            try:
                cdata = msgspec.convert({"body": c["body"], "internal": c.get("internal_note", False)}, CommentCreate)
            except (KeyError, ValueError, msgspec.ValidationError) as exc:
                raise ValueError(f"{cwhere}: {exc}") from exc
            author = users.get(c.get("author"))
            if author is None:
                raise ValueError(f"{cwhere}: unknown user {c.get('author')!r}")
            if (internal_post or cdata.internal) and not author.sees_internal:
                raise ValueError(f"{cwhere}: {author.key} cannot write internal content")
            comments.append(SampleComment(author.key, cdata.body, _days_ago(c.get("days_ago"), cwhere), cdata.internal))
        posts.append(
            SamplePost(
                key=p["key"],
                author=p["author"],
                kind=PostKind(data.kind).value,
                title=data.title,
                body=data.body,
                tags=tuple(data.tags),
                visibility=data.visibility.value,
                status=status,
                language=p.get("language"),
                days_ago=_days_ago(p.get("days_ago"), where),
                group=p.get("group") or None,
                voters=voters,
                comments=tuple(comments),
            )
        )
    if len({p.key for p in posts}) != len(posts):
        raise ValueError("posts: duplicate keys")
    return Sample(users=tuple(users.values()), posts=tuple(posts))


# Deterministic times ------------------------------------------------------------------------------


def _unit(*parts: str | int) -> float:
    """A stable number in [0, 1) for the given parts."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _id_at(moment: datetime) -> UUID:
    """A UUIDv7 whose embedded time is the row's own (backdated) creation time."""
    return uuid7(nanoseconds=int(moment.timestamp() * 1_000_000) * 1_000)


def _post_created(post: SamplePost, now: datetime) -> datetime:
    return now - timedelta(days=post.days_ago) - _POST_OFFSET * _unit("post", post.key)


def _vote_time(post: SamplePost, created: datetime, user_key: str, now: datetime) -> datetime:
    # Squared: most votes arrive soon after a post appears, a long tail later. Never after ``now``.
    return created + (now - created) * _unit("vote", post.key, user_key) ** 2


def _comment_time(post: SamplePost, created: datetime, index: int, comment: SampleComment, now: datetime) -> datetime:
    moment = now - timedelta(days=comment.days_ago) - _COMMENT_OFFSET * _unit("comment", post.key, index)
    earliest = created + timedelta(minutes=1 + 59 * _unit("comment-min", post.key, index))
    return min(max(moment, earliest), now)


def _history(
    post: SamplePost,
    created: datetime,
    comments: list[tuple[SampleComment, datetime]],
    product_team: list[SampleUser],
    users: dict[str, SampleUser],
    now: datetime,
) -> list[tuple[str | None, str, str, datetime]]:
    """(from, to, actor key, when) for every status the post has had, oldest first."""
    changes: list[tuple[str | None, str, str, datetime]] = [(None, "open", post.author, created)]
    path = _STATUS_PATHS[post.status]
    if not path:
        return changes
    # A product-team comment is where the team speaks about the post: the last one marks the
    # current status (just before it), and its author is the one who moved the post.
    team_comments = [(c, at) for c, at in comments if users[c.author].is_product_team]
    if team_comments:
        anchor_comment, anchor = max(team_comments, key=lambda ca: ca[1])
        actor = anchor_comment.author
        end = anchor - timedelta(minutes=5 + 55 * _unit("status-end", post.key))
        if end <= created:
            end = created + (anchor - created) / 2
    else:
        if not product_team:
            raise ValueError(f"{post.key}: status {post.status!r} needs a product-team user in the sample")
        actor = product_team[int(_unit("status-actor", post.key) * len(product_team))].key
        end = now
    n = len(path)
    previous = "open"
    for i, status in enumerate(path, start=1):
        if i == n and team_comments:
            weight = 1.0
        else:  # inside the i-th n-th of the span: strictly increasing, strictly after creation
            weight = (i - 0.7 + 0.4 * _unit("status", post.key, i)) / n
        changes.append((previous, status, actor, created + (end - created) * weight))
        previous = status
    return changes


# Loading ------------------------------------------------------------------------------------------


async def _existing_post_ids(session: AsyncSession, sample: Sample) -> dict[str, UUID]:
    emails = {u.key: u.email for u in sample.users}
    rows = await session.execute(
        select(Post.id, Post.title, User.email)
        .join(User, User.id == Post.author_id)
        .where(User.email.in_(emails.values()))
        .order_by(Post.created_at, Post.id)
    )
    found: dict[tuple[str, str], UUID] = {}
    for post_id, title, email in rows:
        found.setdefault((email, title), post_id)
    return {p.key: found[(emails[p.author], p.title)] for p in sample.posts if (emails[p.author], p.title) in found}


async def load_demo(
    session: AsyncSession,
    *,
    password: str,
    now: datetime | None = None,
    sample_path: Path | None = None,
) -> DemoSummary:
    """Fill the forum with the demo sample in the session's transaction (the caller commits).

    Idempotent: if any demo user's email is already registered, nothing is written and the summary
    has ``created=False``. Every demo user gets ``password`` (hashed once, the hash shared); kinds
    and roles come from the sample. ``now`` (timezone-aware, default: the current time) is the end of
    the timeline: posts are ``days_ago`` before it, and no vote, comment or status change is after it.
    Raises ValueError for a bad password, a naive ``now`` or an inconsistent sample.
    """
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    try:
        msgspec.convert({"email": "demo@example.com", "password": password, "display_name": "demo"}, UserRegister)
    except msgspec.ValidationError as exc:
        raise ValueError(f"password: {exc}") from exc
    sample = read_sample(sample_path)
    groups_by_key = {p.key: p.group for p in sample.posts}
    n_groups = len(sample.groups)

    await session.execute(select(func.pg_advisory_xact_lock(_ADVISORY_LOCK_KEY)))
    existing = await session.scalar(
        select(func.count()).select_from(User).where(User.email.in_([u.email for u in sample.users]))
    )
    if existing:
        return DemoSummary(
            created=False,
            users=0,
            posts=0,
            votes=0,
            comments=0,
            groups=n_groups,
            post_ids_by_key=await _existing_post_ids(session, sample),
            groups_by_key=groups_by_key,
        )

    password_hash = await hash_password(password)
    users = {u.key: u for u in sample.users}
    product_team = [u for u in sample.users if u.role == UserRole.PRODUCT.value] or [
        u for u in sample.users if u.role == UserRole.ADMIN.value
    ]
    first_seen: dict[str, datetime] = {}

    def seen(user_key: str, moment: datetime) -> None:
        if user_key not in first_seen or moment < first_seen[user_key]:
            first_seen[user_key] = moment

    # Ids are needed before the rows exist (votes point at posts, posts at users), so the users'
    # ids are made after their creation time is known, which is only after all their activity.
    post_rows: list[dict[str, Any]] = []
    vote_rows: list[dict[str, Any]] = []
    comment_rows: list[dict[str, Any]] = []
    change_rows: list[dict[str, Any]] = []
    day_counts: Counter[tuple[UUID, date]] = Counter()
    post_ids: dict[str, UUID] = {}

    for post in sample.posts:
        created = _post_created(post, now)
        post_id = _id_at(created)
        post_ids[post.key] = post_id
        seen(post.author, created)

        kinds = Counter(users[v].kind for v in post.voters)
        for voter in post.voters:
            at = _vote_time(post, created, voter, now)
            seen(voter, at)
            vote_rows.append({"post_id": post_id, "user_key": voter, "voter_kind": users[voter].kind, "created_at": at})
            day_counts[(post_id, at.astimezone(UTC).date())] += 1

        timed_comments = [(c, _comment_time(post, created, i, c, now)) for i, c in enumerate(post.comments)]
        for c, at in timed_comments:
            seen(c.author, at)
            comment_rows.append(
                {
                    "id": _id_at(at),
                    "post_id": post_id,
                    "author_key": c.author,
                    "body": c.body,
                    "internal": c.internal,
                    "deleted_at": None,
                    "created_at": at,
                    "updated_at": at,
                }
            )

        for from_status, to_status, actor, at in _history(post, created, timed_comments, product_team, users, now):
            seen(actor, at)
            change_rows.append(
                {
                    "id": _id_at(at),
                    "post_id": post_id,
                    "actor_key": actor,
                    "from_status": from_status,
                    "to_status": to_status,
                    "note": None,
                    "created_at": at,
                    "updated_at": at,
                }
            )

        post_rows.append(
            {
                "id": post_id,
                "kind": post.kind,
                "title": post.title,
                "body": post.body,
                "tags": list(post.tags),
                "visibility": post.visibility,
                "status": post.status,
                "author_key": post.author,
                "vote_total": len(post.voters),
                "vote_internal": kinds[UserKind.INTERNAL.value],
                "vote_external": kinds[UserKind.EXTERNAL.value],
                "comment_count": sum(not c.internal for c in post.comments),
                "internal_note_count": sum(c.internal for c in post.comments),
                "deleted_at": None,
                "created_at": created,
                "updated_at": created,
            }
        )

    # Accounts open some days before their owner first shows up.
    oldest = now - timedelta(days=max((p.days_ago for p in sample.posts), default=0))
    user_rows: list[dict[str, Any]] = []
    user_ids: dict[str, UUID] = {}
    for u in sample.users:
        joined = first_seen.get(u.key, oldest) - timedelta(days=2 + 40 * _unit("user", u.key))
        user_ids[u.key] = _id_at(joined)
        user_rows.append(
            {
                "id": user_ids[u.key],
                "email": u.email,
                "display_name": u.display_name,
                "password_hash": password_hash,
                "kind": u.kind,
                "role": u.role,
                "is_active": True,
                "created_at": joined,
                "updated_at": joined,
            }
        )

    def resolve(rows: list[dict[str, Any]], key: str, column: str) -> list[dict[str, Any]]:
        return [{**{k: v for k, v in r.items() if k != key}, column: user_ids[r[key]]} for r in rows]

    # Bulk inserts (executemany with multi-row VALUES), parents first.
    await session.execute(insert(User), user_rows)
    if post_rows:
        await session.execute(insert(Post), resolve(post_rows, "author_key", "author_id"))
    if vote_rows:
        await session.execute(insert(Vote), resolve(vote_rows, "user_key", "user_id"))
        await session.execute(
            insert(PostVoteDay),
            [{"post_id": pid, "day": day, "votes": n} for (pid, day), n in day_counts.items()],
        )
    if comment_rows:
        await session.execute(insert(Comment), resolve(comment_rows, "author_key", "author_id"))
    if change_rows:
        await session.execute(insert(StatusChange), resolve(change_rows, "actor_key", "actor_id"))

    # Authors and voters follow their posts, as they would through the API.
    followers = {(user_ids[r["author_key"]], r["id"]) for r in post_rows}
    followers |= {(user_ids[r["user_key"]], r["post_id"]) for r in vote_rows}
    if followers:
        await session.execute(insert(Subscription), [{"user_id": u, "post_id": p} for u, p in sorted(followers)])
    # Shipped posts are credited by the same code as a ship through the API, dated when they shipped.
    for row in change_rows:
        if row["to_status"] == PostStatus.SHIPPED.value:
            shipped = await session.get(Post, row["post_id"])
            actor = await session.get(User, user_ids[row["actor_key"]])
            assert shipped is not None and actor is not None
            event = await ShipService(session).ship(shipped, actor)
            if event is not None:
                event.created_at = row["created_at"]
    await load_demo_survey(session, user_ids=user_ids, post_ids=post_ids, now=now)  # forum/demo/survey.json
    await session.flush()

    return DemoSummary(
        created=True,
        users=len(user_rows),
        posts=len(post_rows),
        votes=len(vote_rows),
        comments=len(comment_rows),
        groups=n_groups,
        post_ids_by_key=post_ids,
        groups_by_key=groups_by_key,
    )


__all__ = ["DEFAULT_SAMPLE_PATH", "DemoSummary", "Sample", "load_demo", "read_sample"]
