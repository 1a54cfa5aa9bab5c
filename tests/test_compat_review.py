"""Findings of the compatibility review against Coal Mine 0.7.1, each pinned by a test."""

from __future__ import annotations

import pytest

from coal_mine.business_logic import BusinessLogic
from coal_mine.models import BadRequestError
from tests.helpers import ServerProcess


def test_update_with_the_same_emails_in_another_order_changes_nothing(logic: BusinessLogic) -> None:
    cid = logic.create("Job", 60, emails=["a@example.com", "b@example.com"]).id
    for emails in (["b@example.com", "a@example.com"], ["a@example.com", "b@example.com", "a@example.com"]):
        with pytest.raises(BadRequestError, match="No updates specified"):
            logic.update(cid, emails=emails)
    assert logic.get(cid).emails == ["a@example.com", "b@example.com"]


def test_update_with_reordered_emails_keeps_the_stored_order(logic: BusinessLogic) -> None:
    """Another change in the same request goes through; the address list stays as it was."""
    cid = logic.create("Job", 60, emails=["a@example.com", "b@example.com"]).id
    canary = logic.update(cid, description="new", emails=["b@example.com", "a@example.com"])
    assert canary.description == "new"
    assert logic.get(cid).emails == ["a@example.com", "b@example.com"]


def test_update_emails_reordered_over_http_is_no_updates_specified(server: ServerProcess) -> None:
    status, body = server.call(
        "create", name="Ordered", periodicity="60", email=["a@example.com", "b@example.com"]
    )
    assert status == 200, body
    status, body = server.call("update", slug="ordered", email=["b@example.com", "a@example.com"])
    assert (status, body) == (400, {"status": "error", "error": "No updates specified"})
    status, body = server.call("update", slug="ordered", email=["b@example.com"])
    assert status == 200 and body["canary"]["emails"] == ["b@example.com"]
