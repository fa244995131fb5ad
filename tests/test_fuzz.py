"""Property-based fuzzing of every operation in the app's own OpenAPI description, with schemathesis.

The schema is read from ``GET /schema/openapi.json`` of an in-process app and every request goes through
the Litestar ``TestClient`` (no network). Each operation gets a bounded, seeded batch of generated
requests (positive and negative data), sent anonymously and as an admin (the product team plus the
admin-only routes). About half of the generated path ids (and ids in bodies such as ``into`` or
``critique_id``) are swapped for real objects seeded beforehand (public and internal posts, a critique,
comments, an internal note, a cluster, a merge, a webhook, another user's notification), so the
handlers behind the 404s are exercised too.

The fuzzing runs once per module; the tests then assert on its findings, one property per test, so a
server error is never hidden behind a documentation gap and vice versa:

- ``not_a_server_error``: no 5xx anywhere;
- ``status_code_conformance``: every status the API answers is documented for that operation;
- ``content_type_conformance``: the response's media type is the documented one;
- ``response_schema_conformance``: the body matches the documented schema.
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
from forum.encoding import get_encoder
from forum.jobs import BackgroundWorker
from forum.settings import Settings
from tests.conftest import Actor, Api, _run, _truncate

MAX_EXAMPLES = 25  # per operation and per actor
BASE_URL = "http://testserver.local"
CHECKS = {
    "not_a_server_error": not_a_server_error,
    "status_code_conformance": status_code_conformance,
    "content_type_conformance": content_type_conformance,
    "response_schema_conformance": response_schema_conformance,
}
ACTORS = ("anonymous", "admin")
# Destructive methods last, so that the objects the other operations aim at still exist when they run.
METHOD_ORDER = {"GET": 0, "POST": 1, "PUT": 2, "PATCH": 3, "DELETE": 4}


@dataclass
class Finding:
    """One distinct failure: the first request that showed it and how many requests did."""

    operation: str
    check: str
    status: int
    title: str
    message: str
    request: str
    body: str
    count: int = 1

    def report(self) -> str:
        return (
            f"- {self.operation} -> {self.status} [{self.check}] {self.title} (x{self.count})\n"
            f"    {self.message.strip()[:400]}\n"
            f"    request: {self.request[:300]}\n"
            f"    response: {self.body[:300]}"
        )


@dataclass
class FuzzRun:
    findings: dict[tuple[str, str, int, str], Finding] = field(default_factory=dict)
    statuses: dict[str, dict[int, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    requests: int = 0
    seconds: float = 0.0

    def by_check(self, check: str) -> list[Finding]:
        return [f for f in self.findings.values() if f.check == check]


@dataclass
class Seeded:
    """Real objects that generated path ids are sometimes replaced with, by parameter name."""

    ids: dict[str, list[str]]

    def candidates(self, name: str) -> list[str]:
        return self.ids.get(name, [])


def _seed(api: Api, database_url: str, settings: Settings) -> tuple[dict[str, Actor], Seeded]:
    admin = api.make_user("internal", "admin", name="fuzz-admin")
    product = api.make_user("internal", "product", name="fuzz-product")
    employee = api.make_user("internal", "member", name="fuzz-employee")
    customer = api.register("fuzz-customer")
    voter = api.register("fuzz-voter")
    c = api.client

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
    assert c.post(f"/api/posts/{public['id']}/critiques", json={"critique_id": critique["id"]}, headers=product.headers)
    merge = c.post(f"/api/posts/{duplicate['id']}/merge", json={"into": target["id"]}, headers=product.headers)
    assert merge.status_code == 200, merge.text
    status = c.post(f"/api/posts/{public['id']}/status", json={"status": "planned"}, headers=product.headers)
    assert status.status_code == 200, status.text
    hook = c.post(
        "/api/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["post.created"]}, headers=admin.headers
    )
    assert hook.status_code == 201, hook.text

    worker = BackgroundWorker(database_url, get_encoder(settings.embedding_model), settings.duplicate_threshold)
    _run(worker.run(drain=True))
    clusters = c.get("/api/clusters", headers=product.headers).json()["items"]
    assert clusters, "the worker grouped the seeded posts"
    notifications = c.get("/api/me/notifications", headers=customer.headers).json()["items"]
    assert notifications, "the status change notified the author"

    posts = [public["id"], internal["id"], critique["id"], duplicate["id"], target["id"]]
    ids = {
        "post_id": posts,
        "idea_id": [public["id"], internal["id"], target["id"]],
        "critique_id": [critique["id"]],
        "into": [target["id"], public["id"], internal["id"]],
        "comment_id": [comment.json()["id"], note.json()["id"]],
        "cluster_id": [cl["id"] for cl in clusters],
        "post_ids": [[p] for p in posts],
        # Never the fuzzing admin itself: deactivating or demoting it would turn the rest of the run into 401s.
        "user_id": [customer.id, employee.id, voter.id],
        "author": [customer.id, employee.id],
        "webhook_id": [hook.json()["id"]],
        "notification_id": [n["id"] for n in notifications],  # someone else's, for the admin too
    }
    return {"anonymous": None, "admin": admin}, Seeded(ids)


def _swap_known_ids(case: schemathesis.Case, data: st.DataObject, seeded: Seeded) -> None:
    # The spec declares a global bearer scheme, so schemathesis makes up Authorization headers; the actor's
    # own header (or none, for the anonymous run) is what this run is about.
    if case.headers:
        for name in [h for h in case.headers if h.lower() == "authorization"]:
            del case.headers[name]
    for name in list(case.path_parameters or {}):
        known = seeded.candidates(name)
        if known and data.draw(st.booleans(), label=f"known {name}"):
            case.path_parameters[name] = data.draw(st.sampled_from(known), label=name)
    if isinstance(case.body, dict):
        for name in list(case.body):
            known = seeded.candidates(name)
            if known and data.draw(st.booleans(), label=f"known {name}"):
                case.body[name] = data.draw(st.sampled_from(known), label=name)


def _send(client: TestClient, case: schemathesis.Case, headers: dict[str, str]) -> Any:
    """Serialise the case exactly as schemathesis would for `requests`, then send the bytes in-process."""
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
    return client.request(prepared.method, prepared.url, headers=dict(prepared.headers), content=prepared.body or b"")


TIMES = defaultdict(float)


def _fuzz_operation(client: TestClient, operation: Any, headers: dict[str, str], seeded: Seeded, run: FuzzRun) -> None:
    label = operation.label
    strategies = [operation.as_strategy(schemathesis.GenerationMode.POSITIVE)]
    try:
        strategies.append(operation.as_strategy(schemathesis.GenerationMode.NEGATIVE))
    except Exception:  # an operation with nothing to negate (no parameters, no body)
        pass

    @hypothesis.seed(zlib.crc32(label.encode()))
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=False,  # the explicit seed above already makes every run identical
        phases=[Phase.explicit, Phase.generate],  # findings are collected, not raised: nothing to shrink
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @hypothesis.given(case=st.one_of(*strategies), data=st.data())
    def fuzz(case: schemathesis.Case, data: st.DataObject) -> None:
        _swap_known_ids(case, data, seeded)
        t0 = time.perf_counter()
        response = _send(client, case, headers)
        TIMES["send"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        run.requests += 1
        run.statuses[label][response.status_code] += 1
        for name, check in CHECKS.items():
            try:
                case.validate_response(response, checks=[check], headers=headers)
            except FailureGroup as group:
                for failure in group.exceptions:
                    key = (label, name, response.status_code, failure.title)
                    if key in run.findings:
                        run.findings[key].count += 1
                        continue
                    run.findings[key] = Finding(
                        operation=label,
                        check=name,
                        status=response.status_code,
                        title=failure.title,
                        message=failure.message,
                        request=f"{response.request.method} {response.request.url} {dict(response.request.headers)} {response.request.content[:200]!r}",
                        body=response.text,
                    )
        TIMES["validate"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    fuzz()
    TIMES["total"] += time.perf_counter() - t0


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
    )
    app = create_app(settings)
    try:
        with TestClient(app=app, base_url=BASE_URL) as client:
            api = Api(client, database_url)
            actors, seeded = _seed(api, database_url, settings)
            raw = client.get("/schema/openapi.json")
            assert raw.status_code == 200
            schema = schemathesis.openapi.from_dict(raw.json())
            operations = sorted(
                (result.ok() for result in schema.get_all_operations()),
                key=lambda op: (METHOD_ORDER.get(op.method.upper(), 9), op.path),
            )
            runs: dict[str, FuzzRun] = {}
            for name in ACTORS:
                actor = actors[name]
                headers = actor.headers if actor else {}
                run = runs[name] = FuzzRun()
                started = time.monotonic()
                for operation in operations:
                    _fuzz_operation(client, operation, headers, seeded, run)
                run.seconds = time.monotonic() - started
            yield runs
    finally:
        _run(_truncate(database_url))


def _report(findings: list[Finding]) -> str:
    return f"{len(findings)} distinct finding(s):\n" + "\n".join(f.report() for f in findings)


@pytest.mark.parametrize("actor", ACTORS)
def test_stats(fuzz_runs: dict[str, FuzzRun], actor: str) -> None:
    run = fuzz_runs[actor]
    print(f"{actor}: {run.requests} requests in {run.seconds:.1f}s")
    print("\n".join(f"{op}: {dict(s)}" for op, s in run.statuses.items()))
    from collections import Counter

    print(Counter((f.check, f.status // 100) for f in run.findings.values()))
    print(dict(TIMES))
    assert False
