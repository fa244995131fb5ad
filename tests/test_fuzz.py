"""Property-based fuzzing of every operation in the app's own OpenAPI description, with schemathesis.

The schema is read from ``GET /schema/openapi.json`` of an in-process app; every request goes through the
Litestar ``TestClient`` (no network). Each operation gets a bounded, seeded batch of generated requests
(positive and negative data), sent once anonymously and once as an admin (the product team's routes plus
the admin-only ones). Two thirds of the generated ids (in paths, and ``into``/``critique_id``/
``cluster_id``/``post_ids`` in bodies) are swapped for real objects seeded beforehand: public and
internal posts, a critique and its link, a comment and an internal note, a cluster, a merge, a webhook,
another user's notification. So the handlers behind the 404s are fuzzed too.

The fuzzing runs once per module and records every distinct failure of four schemathesis checks:
``not_a_server_error``, ``status_code_conformance``, ``content_type_conformance`` and
``response_schema_conformance``. All four run on every response; the tests then split the findings by
the class of the response, so that a server error is never hidden behind a documentation gap:

- no 5xx at all (whatever the check);
- 2xx responses: documented status, documented media type, body matches the documented schema;
- 4xx responses: the same, i.e. the API's error answers are the ones its OpenAPI description promises.
"""

from __future__ import annotations

import time
import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from litestar.testing import TestClient
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from forum.app import create_app
from forum.encoding import PostEmbedder
from forum.jobs import BackgroundWorker
from forum.settings import Settings
from tests.conftest import Actor, Api, _run, _truncate

MAX_EXAMPLES = 20  # per operation and per actor: ~2 x 49 x 20 requests, about 40 s in all
BASE_URL = "http://testserver.local"
CHECKS = {
    "not_a_server_error": not_a_server_error,
    "status_code_conformance": status_code_conformance,
    "content_type_conformance": content_type_conformance,
    "response_schema_conformance": response_schema_conformance,
}
ACTORS = ("anonymous", "admin")
# Destructive methods last, so that the seeded objects still exist while the other operations aim at them.
METHOD_ORDER = {"GET": 0, "POST": 1, "PUT": 2, "PATCH": 3, "DELETE": 4}


@dataclass
class Finding:
    """One distinct failure (operation, check, status, title): the first request that showed it."""

    operation: str
    check: str
    status: int
    title: str
    message: str
    request: str
    body: str
    count: int = 1

    def report(self) -> str:
        message = " ".join(self.message.split())[:300]
        return (
            f"- {self.operation} -> {self.status} [{self.check}] {self.title} (x{self.count}): {message}\n"
            f"    request: {self.request[:300]}\n"
            f"    response: {self.body[:300]}"
        )


@dataclass
class FuzzRun:
    findings: dict[tuple[str, str, int, str], Finding] = field(default_factory=dict)
    statuses: dict[str, dict[int, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    operations: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def findings_for(self, status_class: int) -> list[Finding]:
        return sorted(
            (f for f in self.findings.values() if f.status // 100 == status_class),
            key=lambda f: (f.operation, f.status, f.check),
        )

    def answered(self, status_class: int) -> set[str]:
        return {op for op, seen in self.statuses.items() if any(s // 100 == status_class for s in seen)}


@dataclass
class Seeded:
    """Real ids that generated ones are swapped for: single parameters by name, and coherent groups
    (a comment with its post, a link with its idea, a member with its cluster)."""

    single: dict[str, list[Any]]
    groups: dict[tuple[str, ...], list[tuple[str, ...]]]


def _seed(api: Api, database_url: str, settings: Settings) -> tuple[dict[str, Actor | None], Seeded]:
    c = api.client
    admin = api.make_user("internal", "admin", name="fuzz-admin")
    product = api.make_user("internal", "product", name="fuzz-product")
    employee = api.make_user("internal", "member", name="fuzz-employee")
    customer = api.register("fuzz-customer")
    voter = api.register("fuzz-voter")

    public = api.post(customer, title="Export invoices as PDF", body="Monthly, for the accountant", tags=["billing"])
    internal = api.post(employee, title="Refund tool for support", body="Internal only", visibility="internal")
    critique = api.post(customer, kind="critique", title="Invoices are hard to find")
    duplicate = api.post(voter, title="Download invoices in PDF")
    target = api.post(voter, title="Dark mode at night")
    for actor in (voter, employee):
        assert c.put(f"/api/posts/{public['id']}/vote", headers=actor.headers).status_code == 200
    comment = c.post(f"/api/posts/{public['id']}/comments", json={"body": "Yes please"}, headers=voter.headers)
    note = c.post(
        f"/api/posts/{public['id']}/comments",
        json={"body": "On the Q3 plan", "internal": True},
        headers=employee.headers,
    )
    assert comment.status_code == note.status_code == 201
    link = c.post(f"/api/posts/{public['id']}/critiques", json={"critique_id": critique["id"]}, headers=product.headers)
    assert link.status_code == 201, link.text
    merge = c.post(f"/api/posts/{duplicate['id']}/merge", json={"into": target["id"]}, headers=product.headers)
    assert merge.status_code == 200, merge.text
    status = c.post(f"/api/posts/{public['id']}/status", json={"status": "planned"}, headers=product.headers)
    assert status.status_code == 200, status.text
    hook = c.post(
        "/api/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["post.created"]}, headers=admin.headers
    )
    assert hook.status_code == 201, hook.text

    worker = BackgroundWorker(
        database_url, PostEmbedder.from_spec(settings.embedding_model), settings.duplicate_threshold
    )
    _run(worker.run(drain=True))  # embeds and groups the posts: clusters exist
    clusters = c.get("/api/clusters", headers=product.headers).json()["items"]
    members = [
        (cluster["id"], member["post_id"])
        for cluster in clusters
        for member in c.get(f"/api/clusters/{cluster['id']}", headers=product.headers).json()["members"]
    ]
    assert members, "the worker grouped the seeded posts"
    notifications = c.get("/api/me/notifications", headers=customer.headers).json()["items"]
    assert notifications, "the status change notified the author"

    posts = [public["id"], internal["id"], critique["id"], duplicate["id"], target["id"]]
    single = {
        "post_id": posts,
        "idea_id": [public["id"], internal["id"], target["id"]],
        "critique_id": [critique["id"]],
        "into": [target["id"], public["id"], internal["id"]],
        "cluster_id": [cluster_id for cluster_id, _ in members],
        "post_ids": [[post_id] for _, post_id in members],
        # Never the fuzzing admin: deactivating or demoting it would turn the rest of its run into 401/403s.
        "user_id": [customer.id, employee.id, voter.id],
        "webhook_id": [hook.json()["id"]],
        "notification_id": [n["id"] for n in notifications],  # the customer's: nobody else may mark them read
    }
    groups = {
        ("post_id", "comment_id"): [(public["id"], comment.json()["id"]), (public["id"], note.json()["id"])],
        ("idea_id", "critique_id"): [(public["id"], critique["id"])],
        ("cluster_id", "post_id"): members,
    }
    return {"anonymous": None, "admin": admin}, Seeded(single, groups)


def _swap_known_ids(case: schemathesis.Case, data: st.DataObject, seeded: Seeded) -> None:
    # The spec declares one global bearer scheme, so schemathesis makes up Authorization headers; the run's
    # own header (or none, anonymously) is what is being tested. Negative cases that drop the header on
    # purpose ("missing Authorization") still do so.
    for name in [h for h in (case.headers or {}) if h.lower() == "authorization"]:
        del case.headers[name]

    def known() -> bool:
        return data.draw(st.integers(0, 2)) > 0

    path = case.path_parameters or {}
    swapped: set[str] = set()
    for names, values in seeded.groups.items():
        if all(n in path for n in names) and known():
            for name, value in zip(names, data.draw(st.sampled_from(values)), strict=True):
                path[name] = value
        swapped.update(names if all(n in path for n in names) else ())
    for name in path:
        if name not in swapped and seeded.single.get(name) and known():
            path[name] = data.draw(st.sampled_from(seeded.single[name]))
    if isinstance(case.body, dict):
        for name in list(case.body):
            if seeded.single.get(name) and known():
                case.body[name] = data.draw(st.sampled_from(seeded.single[name]))


def _send(client: TestClient, case: schemathesis.Case, headers: dict[str, str]) -> Any:
    """Serialise the case exactly as schemathesis does for `requests`, then send those bytes in-process."""
    kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=headers)
    prepared = requests.Request(
        method=kwargs["method"],
        url=kwargs["url"],
        headers=kwargs.get("headers"),
        params=kwargs.get("params"),
        cookies=kwargs.get("cookies"),
        json=kwargs.get("json"),
        data=kwargs.get("data"),
        files=kwargs.get("files"),
    ).prepare()
    body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body or b""
    return client.request(prepared.method, prepared.url, headers=dict(prepared.headers), content=body)


def _fuzz_operation(client: TestClient, operation: Any, headers: dict[str, str], seeded: Seeded, run: FuzzRun) -> None:
    label = operation.label
    strategies = [operation.as_strategy(schemathesis.GenerationMode.POSITIVE)]
    try:
        strategies.append(operation.as_strategy(schemathesis.GenerationMode.NEGATIVE))
    except Exception:  # an operation with nothing to negate (no parameters, no body)
        pass

    @hypothesis.seed(zlib.crc32(label.encode()))  # the same requests on every run and every machine
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # findings are collected, not raised: nothing to shrink
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @hypothesis.given(case=st.one_of(*strategies), data=st.data())
    def fuzz(case: schemathesis.Case, data: st.DataObject) -> None:
        _swap_known_ids(case, data, seeded)
        response = _send(client, case, headers)
        run.statuses[label][response.status_code] += 1
        for name, check in CHECKS.items():
            try:
                case.validate_response(response, checks=[check], headers=headers)
            except FailureGroup as group:
                for failure in group.exceptions:
                    key = (label, name, response.status_code, failure.title)
                    if key in run.findings:
                        run.findings[key].count += 1
                    else:
                        request = response.request
                        run.findings[key] = Finding(
                            operation=label,
                            check=name,
                            status=response.status_code,
                            title=failure.title,
                            message=failure.message,
                            request=f"{request.method} {request.url} {request.content[:200]!r}",
                            body=response.text,
                        )

    fuzz()


@pytest.fixture(scope="module")
def fuzz_runs(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, FuzzRun]]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("fuzz") / "data",
        database_url=database_url,
        secret_key="test-secret-key-that-is-long-enough-for-hs256",
        rate_limit_enabled=False,
        embedding_model="hashing",
        duplicate_threshold=0.5,
        run_worker_in_server=False,
        webhook_allowed_hosts=["127.0.0.1"],  # the seeded webhook points at loopback
    )
    try:
        with TestClient(app=create_app(settings), base_url=BASE_URL) as client:
            actors, seeded = _seed(Api(client, database_url), database_url, settings)
            document = client.get("/schema/openapi.json")
            assert document.status_code == 200, document.text
            schema = schemathesis.openapi.from_dict(document.json())
            operations = sorted(
                (result.ok() for result in schema.get_all_operations()),
                # Logging out ends the actor's sessions: last of all.
                key=lambda op: (op.path == "/api/auth/logout", METHOD_ORDER.get(op.method.upper(), 9), op.path),
            )
            runs: dict[str, FuzzRun] = {}
            for name in ACTORS:
                actor = actors[name]
                run = runs[name] = FuzzRun(operations=[op.label for op in operations])
                started = time.monotonic()
                for operation in operations:
                    _fuzz_operation(client, operation, actor.headers if actor else {}, seeded, run)
                run.seconds = time.monotonic() - started
            yield runs
    finally:
        _run(_truncate(database_url))


def _report(findings: list[Finding]) -> str:
    return f"{len(findings)} distinct finding(s):\n" + "\n".join(f.report() for f in findings)


@pytest.mark.parametrize("actor", ACTORS)
def test_fuzzing_reaches_every_operation(fuzz_runs: dict[str, FuzzRun], actor: str) -> None:
    """The fuzzing means something: every operation was called, and real objects were reached."""
    run = fuzz_runs[actor]
    assert len(run.operations) >= 45
    assert set(run.statuses) == set(run.operations), "every operation in the spec was fuzzed"
    ok = run.answered(2)
    if actor == "admin":
        # Authenticated, most operations succeed at least once (seeded ids); the rest reach their handler.
        assert len(ok) >= 0.6 * len(run.operations), sorted(set(run.operations) - ok)
        for operation, seen in run.statuses.items():
            assert set(seen) != {401}, f"{operation} never got past authentication"
    else:
        public_reads = {
            "GET /health",
            "GET /api/posts",
            "GET /api/posts/{post_id}",
            "GET /api/posts/{post_id}/comments",
            "GET /api/changelog",
            "GET /api/leaderboard",
        }
        assert public_reads <= ok, sorted(public_reads - ok)
        assert "GET /api/me" not in ok and "GET /api/webhooks" not in ok


@pytest.mark.parametrize("actor", ACTORS)
def test_no_server_errors(fuzz_runs: dict[str, FuzzRun], actor: str) -> None:
    """`not_a_server_error`: whatever the input, the API never answers 5xx."""
    run = fuzz_runs[actor]
    findings = run.findings_for(5)
    assert not findings, _report(findings)
    assert not any(status >= 500 for seen in run.statuses.values() for status in seen)


@pytest.mark.parametrize("actor", ACTORS)
def test_success_responses_conform_to_the_schema(fuzz_runs: dict[str, FuzzRun], actor: str) -> None:
    """2xx answers: documented status code, media type and body schema."""
    findings = fuzz_runs[actor].findings_for(2)
    assert not findings, _report(findings)


@pytest.mark.parametrize("actor", ACTORS)
def test_error_responses_are_documented(fuzz_runs: dict[str, FuzzRun], actor: str) -> None:
    """4xx answers: the status code is declared for the operation, and the problem document's media type
    (application/problem+json) and shape are the documented ones. No check is narrowed here."""
    findings = fuzz_runs[actor].findings_for(4)
    assert not findings, _report(findings)
