"""A customer in a real browser: signs up, is offered an existing idea while typing a paraphrase of
it, votes for that instead, then posts a new idea, comments and follows."""

from __future__ import annotations

import uuid
from typing import Any

from tests.browser.site import Api

DARK_MODE = {"Please add a dark theme", "Dark colours would save my battery at night", "Quiero modo oscuro en la app"}
TO_FOLLOW = "Reserve a car a day in advance"


def test_customer_signs_up_votes_for_a_suggestion_posts_comments_and_follows(open_page: Any, api: Api) -> None:
    page = open_page()
    page.goto("/")
    page.get_by_test_id("nav-signup").click()
    email = f"nora-{uuid.uuid4().hex[:8]}@example.net"
    page.locator("#display_name").fill("Nora Quint")
    page.locator("#email").fill(email)
    page.locator("#password").fill("a long enough password")
    page.get_by_test_id("signup-submit").click()
    assert page.get_by_test_id("nav-profile").inner_text() == "Nora Quint"

    # A paraphrase (no word in common with "Please add a dark theme") is matched by meaning as it is typed.
    page.get_by_test_id("nav-new-post").click()
    page.get_by_test_id("compose-title").press_sequentially("Night mode with a black background", delay=20)
    suggestion = page.get_by_test_id("suggestion").filter(has=page.get_by_test_id("vote-instead")).first
    suggestion.wait_for()
    titles = page.get_by_test_id("suggestion-link").all_inner_texts()
    assert DARK_MODE & set(titles[:3]), titles
    suggested = next(
        s
        for s in page.get_by_test_id("suggestion").all()
        if s.get_by_test_id("suggestion-link").inner_text() in DARK_MODE
    )
    post_id = suggested.get_attribute("data-post-id")
    before = api.get(f"/api/posts/{post_id}", as_=None)["votes"]["total"]
    suggested.get_by_test_id("vote-instead").click()
    page.get_by_test_id("post-title").wait_for()
    assert page.get_by_test_id("vote-count").first.inner_text() == str(before + 1)
    assert page.get_by_test_id("vote-button").first.get_attribute("aria-pressed") == "true"
    assert api.get(f"/api/posts/{post_id}", as_=None)["votes"]["total"] == before + 1

    # Unvote and vote again on the post page: the count follows at once.
    page.get_by_test_id("vote-button").first.click()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=vote-button]').getAttribute('aria-pressed') === 'false'"
    )
    assert page.get_by_test_id("vote-count").first.inner_text() == str(before)
    page.get_by_test_id("vote-button").first.click()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=vote-button]').getAttribute('aria-pressed') === 'true'"
    )
    assert page.get_by_test_id("vote-count").first.inner_text() == str(before + 1)

    # A new idea of her own.
    title = f"Split the monthly invoice by cost centre {uuid.uuid4().hex[:6]}"
    page.get_by_test_id("nav-new-post").click()
    page.get_by_test_id("compose-title").fill(title)
    page.get_by_test_id("compose-body").fill("Our finance team books rides per department.")
    page.get_by_test_id("compose-tags").fill("billing, business")
    page.get_by_test_id("compose-submit").click()
    assert page.get_by_test_id("post-title").inner_text() == title
    mine = page.get_by_test_id("post").get_attribute("data-post-id")
    assert api.get(f"/api/posts/{mine}", as_=None)["author"]["display_name"] == "Nora Quint"

    # A comment, escaped like everything users write.
    page.locator("#comment-body").fill("Also for <b>cost centres</b> abroad")
    page.get_by_test_id("comment-submit").click()
    comment = page.get_by_test_id("comment").filter(has_text="cost centres")
    comment.wait_for()
    assert "<b>cost centres</b>" in comment.inner_text()

    # Follow somebody else's post.
    other = api.post_titled(TO_FOLLOW, as_=None)
    page.goto(f"/posts/{other['id']}")
    follow = page.get_by_test_id("follow-button")
    assert follow.get_attribute("aria-pressed") == "false"
    follow.click()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=follow-button]').getAttribute('aria-pressed') === 'true'"
    )
    token = api.client.post("/api/auth/login", json={"email": email, "password": "a long enough password"}).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    assert api.client.get(f"/api/posts/{other['id']}/subscription", headers=headers).json()["subscribed"] is True
    page.reload()
    assert page.get_by_test_id("follow-button").get_attribute("aria-pressed") == "true"  # it stuck
