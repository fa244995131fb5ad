"""Property-based fuzzing of every operation in the app's own OpenAPI description, with schemathesis.

The schema is read from ``GET /schema/openapi.json`` of the app served by uvicorn on 127.0.0.1 (in a thread
of this process), so the checks that send probes of their own (unsupported methods, missing or ignored
authentication) reach the same server. Each operation gets a bounded, seeded batch of generated requests
(positive and negative data), sent anonymously, with a member's token and with an admin's (the product
team's routes plus the admin-only ones). Two thirds of the generated ids (in paths, and ``into``/
``critique_id``/``cluster_id``/``post_ids`` in bodies) are swapped for real objects seeded beforehand:
public and internal posts, a critique and its link, a comment and an internal note, a cluster, a merge, a
webhook and a delivery, an API key, another user's notification. So the handlers behind the 404s are fuzzed too.

The fuzzing runs once per module and records every distinct failure of **every** schemathesis check
(``not_a_server_error``, status code, content type, headers and body conformance, positive data accepted,
negative data rejected, unsupported methods and ``Allow``, missing headers, ignored auth, ...). All of them
run on every response; the tests then split the findings by the class of the response, so that a server
error is never hidden behind a documentation gap:

- no 5xx at all (whatever the check);
- 2xx responses: documented status, media type, headers, body; nothing the schema forbids was accepted;
- 4xx responses: documented too, and nothing the schema allows was refused.

One distinction the schema cannot make: a valid request refused by a rule of the forum (merging a post into
itself, splitting off a non-member) is ``422`` with ``type: /problems/domain-rule``, not a schema mismatch
(``/problems/validation``); ``positive_data_acceptance`` counts those apart, in ``FuzzRun.domain_rules``.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import hypothesis
import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis.checks import CHECKS as REGISTERED_CHECKS
from schemathesis.checks import load_all_checks
from schemathesis.core.failures import FailureGroup

from forum.app import create_app
from forum.encoding import PostEmbedder
from forum.settings import Settings
from forum.worker import BackgroundWorker
from tests.conftest import Actor, Api, _run, _truncate
from tests.e2e import free_port

MAX_EXAMPLES = 10  # per operation and per actor: ~3 x 49 x 10 requests plus the checks' probes, ~1.5 min
load_all_checks()
CHECKS = {check.__name__: check for check in REGISTERED_CHECKS.get_all()}
ACTORS = ("anonymous", "member", "admin")
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
    domain_rules: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Valid requests refused by a rule of the forum, not by the schema: merging a post into itself, linking
    an idea as a critique, splitting off a post that is not a member. The schema cannot know them."""

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
    member = api.register("fuzz-member")
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
    delivery = c.post(f"/api/webhooks/{hook.json()['id']}/test", headers=admin.headers)
    assert delivery.status_code == 202, delivery.text
    key = c.post("/api/keys", json={"name": "Fuzzed sync", "scopes": ["read"]}, headers=admin.headers)
    assert key.status_code == 201, key.text
    survey = c.post(
        "/api/surveys",
        json={"kind": "nps", "question_en": "Recommend us?", "throttle_days": 0},
        headers=product.headers,
    )
    assert survey.status_code == 201, survey.text
    survey_answer = c.post(
        f"/api/surveys/{survey.json()['id']}/answers",
        json={"score": 4, "comment": "Invoices in PDF"},
        headers=customer.headers,
    )
    assert survey_answer.status_code == 201, survey_answer.text

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
        # Never the fuzzing admin or member: deactivating them would turn the rest of their run into 401s.
        "user_id": [customer.id, employee.id, voter.id],
        "webhook_id": [hook.json()["id"]],
        "delivery_id": [delivery.json()["id"]],
        "key_id": [key.json()["id"]],
        "notification_id": [n["id"] for n in notifications],  # the customer's: nobody else may mark them read
        "survey_id": [survey.json()["id"]],
        "answer_id": [survey_answer.json()["id"]],
    }
    groups = {
        ("post_id", "comment_id"): [(public["id"], comment.json()["id"]), (public["id"], note.json()["id"])],
        ("idea_id", "critique_id"): [(public["id"], critique["id"])],
        ("cluster_id", "post_id"): members,
        ("webhook_id", "delivery_id"): [(hook.json()["id"], delivery.json()["id"])],
    }
    return {"anonymous": None, "member": member, "admin": admin}, Seeded(single, groups)


def _swap_known_ids(case: schemathesis.Case, data: st.DataObject, seeded: Seeded) -> None:
    """Swap ids for seeded ones. The containers are assigned anew, not edited in place, so that schemathesis
    re-validates the case: a negative case whose only invalid value was swapped for a real id is positive."""
    # The spec declares one global bearer scheme, so schemathesis makes up Authorization headers; the run's
    # own header (or none, anonymously) is what is being tested. Negative cases that drop the header on
    # purpose ("missing Authorization") still do so.
    if case.headers and any(h.lower() == "authorization" for h in case.headers):
        case.headers = {h: v for h, v in case.headers.items() if h.lower() != "authorization"}

    def known() -> bool:
        return data.draw(st.integers(0, 2)) > 0

    path = dict(case.path_parameters or {})
    swapped: set[str] = set()
    for names, values in seeded.groups.items():
        if all(n in path for n in names) and known():
            for name, value in zip(names, data.draw(st.sampled_from(values)), strict=True):
                path[name] = value
        swapped.update(names if all(n in path for n in names) else ())
    for name in path:
        if name not in swapped and seeded.single.get(name) and known():
            path[name] = data.draw(st.sampled_from(seeded.single[name]))
    if path != (case.path_parameters or {}):
        case.path_parameters = path
    if isinstance(case.body, dict):
        body = dict(case.body)
        for name in list(body):
            if seeded.single.get(name) and known():
                body[name] = data.draw(st.sampled_from(seeded.single[name]))
        if body != case.body:
            case.body = body


def _breaks_a_domain_rule(response: requests.Response) -> bool:
    """``422`` with ``type: /problems/domain-rule``: the request matches the schema and the server says so
    (a schema mismatch is ``/problems/validation``, which positive data must never get)."""
    if response.status_code != 422:
        return False
    try:
        return response.json().get("type") == "/problems/domain-rule"
    except ValueError:
        return False


def _fuzz_operation(
    base_url: str, session: requests.Session, operation: Any, headers: dict[str, str], seeded: Seeded, run: FuzzRun
) -> None:
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
        response = case.call(base_url=base_url, session=session, headers=headers)
        run.statuses[label][response.status_code] += 1
        transport = {"base_url": base_url, "session": session, "headers": headers}
        for name, check in CHECKS.items():
            try:
                case.validate_response(response, checks=[check], headers=headers, transport_kwargs=transport)
            except FailureGroup as group:
                if name == "positive_data_acceptance" and _breaks_a_domain_rule(response):
                    run.domain_rules[label] += 1
                    continue
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
                            request=f"{request.method} {request.url} {(request.body or b'')[:200]!r}",
                            body=response.text,
                        )

    fuzz()


class ThreadedServer:
    """The app under uvicorn on a free 127.0.0.1 port, in a thread of the test process."""

    def __init__(self, settings: Settings) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        port = int(self.url.rsplit(":", 1)[1])
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="fuzz-server", daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


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
        with ThreadedServer(settings) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            actors, seeded = _seed(Api(client, database_url), database_url, settings)
            schema = schemathesis.openapi.from_url(f"{server.url}/schema/openapi.json")
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
                with requests.Session() as session:
                    for operation in operations:
                        headers = actor.headers if actor else {}
                        _fuzz_operation(server.url, session, operation, headers, seeded, run)
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
    if actor == "member":
        assert {"GET /api/me", "GET /api/me/notifications", "POST /api/posts"} <= ok, sorted(ok)
        assert "GET /api/webhooks" not in ok and "GET /api/clusters" not in ok
    elif actor == "admin":
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


def test_every_schemathesis_check_runs() -> None:
    """All the checks schemathesis registers, not a chosen few."""
    assert len(CHECKS) >= 14
    assert {"positive_data_acceptance", "negative_data_rejection", "response_headers_conformance"} <= set(CHECKS)
    assert {"unsupported_method", "ignored_auth", "use_after_free", "ensure_resource_availability"} <= set(CHECKS)


@pytest.mark.parametrize("actor", ACTORS)
def test_no_server_errors(fuzz_runs: dict[str, FuzzRun], actor: str) -> None:
    """`not_a_server_error`: whatever the input, the API never answers 5xx."""
    run = fuzz_runs[actor]
    findings = run.findings_for(5)
    assert not findings, _report(findings)
    assert not any(status >= 500 for seen in run.statuses.values() for status in seen)


@pytest.mark.parametrize("actor", ACTORS)
def test_success_responses_conform_to_the_schema(fuzz_runs: dict[str, FuzzRun], actor: str) -> None:
    """2xx answers: documented status code, media type, headers (``Location`` on 201) and body schema;
    and no request the schema forbids (unknown fields, too long, wrong format) was accepted."""
    findings = fuzz_runs[actor].findings_for(2)
    assert not findings, _report(findings)


@pytest.mark.parametrize("actor", ACTORS)
def test_error_responses_are_documented(fuzz_runs: dict[str, FuzzRun], actor: str) -> None:
    """4xx answers: the status code is declared for the operation, and the problem document's media type
    (application/problem+json) and shape are the documented ones; no request the schema allows was refused
    as invalid. No check is narrowed here."""
    findings = fuzz_runs[actor].findings_for(4)
    assert not findings, _report(findings)
