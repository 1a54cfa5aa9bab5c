"""A stateful property test: random valid and invalid requests over real HTTP against a simple model.

After every step: no 500, every error is JSON with a message, and the stored
canaries equal the model (so a rejected request changed nothing).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from coal_mine.business_logic import slugify
from coal_mine.limits import (
    MAX_COMMENT_LENGTH,
    MAX_DESCRIPTION_LENGTH,
    MAX_NAME_LENGTH,
    MAX_PERIODICITY,
)
from tests.helpers import InProcessServer, raw_request

# Periodicities whose fate is known: (text, accepted, stored value).
PERIODICITIES = [
    ("60", True, 60.0),
    ("3600.5", True, 3600.5),
    (str(int(MAX_PERIODICITY)), True, MAX_PERIODICITY),
    ("* * * * * 120", True, "* * * * * 120"),
    ("0 9-17 * * 1-5 600;", True, "0 9-17 * * 1-5 600;"),
    ("0", False, None),
    ("-1", False, None),
    ("nan", False, None),
    ("inf", False, None),
    ("1e9", False, None),
    ("9" * 400, False, None),
    ("1.2.3", False, None),
    ("bogus", False, None),
    ("0 0 31 2 * 60", False, None),
    ("* * * * * 60\n* * * * * 60", False, None),
    (str(int(MAX_PERIODICITY) + 1), False, None),
]
GOOD_EMAILS = ["ops@example.com", "a.b+c@sub.example.org", "root@localhost"]
BAD_EMAILS = ["no body", "Ops <ops@example.com>", "a@b, c@d", "a@b\r\nBcc: x@y", "x@", "a" * 250 + "@b.com"]

names = st.one_of(
    st.text(alphabet="abcXYZ 0_-", min_size=1, max_size=12),
    st.text(max_size=15),
    st.integers(MAX_NAME_LENGTH - 2, MAX_NAME_LENGTH + 2).map(lambda n: "n" * n),
)
texts = st.one_of(
    st.text(max_size=20), st.sampled_from(["d" * MAX_DESCRIPTION_LENGTH, "d" * (MAX_DESCRIPTION_LENGTH + 1)])
)
comments = st.one_of(
    st.text(max_size=20), st.sampled_from(["c" * MAX_COMMENT_LENGTH, "c" * (MAX_COMMENT_LENGTH + 1)])
)
email_lists = st.lists(st.sampled_from(GOOD_EMAILS + BAD_EMAILS), max_size=3)
booleans = st.sampled_from(["true", "false", "yes", "No", "1", "0", "maybe", ""])


@dataclass
class Model:
    id: str
    name: str
    periodicity: float | str
    description: str
    emails: list[str]
    paused: bool
    history: list[str] = field(default_factory=list)  # comments, newest first


def parse_bool(text: str) -> bool | None:
    """None: invalid."""
    lowered = text.lower()
    return True if lowered in ("true", "yes", "1") else False if lowered in ("false", "no", "0", "") else None


def comment_text(action: str, comment: str) -> str:
    return f"{action} ({comment})" if comment else action


class ApiMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.server = InProcessServer(workers=2).__enter__()
        self.model: dict[str, Model] = {}

    def teardown(self) -> None:
        self.server.__exit__(None, None, None)

    # --- helpers --------------------------------------------------------------------------

    def call(self, command: str, **params: Any) -> tuple[int, dict[str, Any]]:
        params = {k: v for k, v in params.items() if v is not None}
        status, body = self.server.call(command, **params)
        self.check_response(status, body)
        return status, body

    @staticmethod
    def check_response(status: int, body: dict[str, Any]) -> None:
        assert status in (200, 400, 401, 404), (status, body)
        if status == 200:
            assert body["status"] == "ok"
        else:
            assert body["status"] == "error" and isinstance(body["error"], str) and body["error"]

    def slug_taken(self, name: str, except_id: str | None = None) -> bool:
        return any(slugify(c.name) == slugify(name) for c in self.model.values() if c.id != except_id)

    def pick(self, data: st.DataObject) -> Model:
        # By creation order, not by id: ids are random, so sorting by them would pick a
        # different canary each time Hypothesis replays a case ("flaky data generation").
        index = data.draw(st.integers(min_value=0, max_value=len(self.model) - 1))
        return self.model[list(self.model)[index]]

    # --- rules ----------------------------------------------------------------------------

    @rule(
        name=names,
        periodicity=st.sampled_from(PERIODICITIES),
        description=texts,
        emails=email_lists,
        paused=booleans,
    )
    def create(self, name: str, periodicity: tuple, description: str, emails: list[str], paused: str) -> None:
        text, periodicity_ok, value = periodicity
        status, body = self.call(
            "create", name=name, periodicity=text, description=description, email=emails, paused=paused
        )
        expect_ok = (
            bool(name)
            and bool(slugify(name))  # a name without a letter or digit is refused
            and len(name) <= MAX_NAME_LENGTH
            and periodicity_ok
            and len(description) <= MAX_DESCRIPTION_LENGTH
            and all(e in GOOD_EMAILS for e in emails)
            and parse_bool(paused) is not None
            and not self.slug_taken(name)
        )
        assert (status == 200) == expect_ok, (status, body)
        if status == 200:
            canary = body["canary"]
            assert re.fullmatch(r"[a-z]{8}", canary["id"]) and canary["periodicity"] == value
            self.model[canary["id"]] = Model(
                canary["id"],
                name,
                value,
                description,
                list(dict.fromkeys(emails)),  # an address given twice is stored once
                bool(parse_bool(paused)),
                ["Canary created"],
            )

    @rule(
        name=st.text(alphabet="abcdefgh XYZ-_0123", min_size=1, max_size=12),
        periodicity=st.sampled_from([p for p in PERIODICITIES if p[1]]),
        description=st.text(max_size=10),
        emails=st.lists(st.sampled_from(GOOD_EMAILS), max_size=2, unique=True),
        paused=st.sampled_from(["", "true", "false"]),
    )
    def create_valid(
        self, name: str, periodicity: tuple, description: str, emails: list[str], paused: str
    ) -> None:
        self.create(name, periodicity, description, emails, paused)

    @precondition(lambda self: self.model)
    @rule(
        data=st.data(),
        name=st.one_of(st.none(), names),
        description=st.one_of(st.none(), texts),
        emails=st.one_of(st.none(), email_lists),
        periodicity=st.one_of(st.none(), st.sampled_from(PERIODICITIES)),
    )
    def update(
        self,
        data: st.DataObject,
        name: str | None,
        description: str | None,
        emails: list[str] | None,
        periodicity: tuple | None,
    ) -> None:
        canary = self.pick(data)
        name = name or None  # blank counts as absent
        description = description or None
        emails = emails or None
        status, body = self.call(
            "update",
            id=canary.id,
            name=name,
            description=description,
            email=emails,
            periodicity=periodicity[0] if periodicity else None,
        )
        invalid = (
            (name is not None and len(name) > MAX_NAME_LENGTH)
            or (name is not None and not slugify(name))
            or (description is not None and len(description) > MAX_DESCRIPTION_LENGTH)
            or (emails is not None and any(e not in GOOD_EMAILS for e in emails))
            or (periodicity is not None and not periodicity[1])
            or (name is not None and self.slug_taken(name, canary.id))
        )
        changes = (
            (name is not None and name != canary.name)
            or (description is not None and description != canary.description)
            or (emails is not None and set(emails) != set(canary.emails))
            or (periodicity is not None and periodicity[2] != canary.periodicity)
        )
        assert (status == 200) == (not invalid and changes), (status, body)
        if status == 200:
            canary.name = name if name is not None else canary.name
            canary.description = description if description is not None else canary.description
            if emails is not None and set(emails) != set(canary.emails):  # order alone is no change
                canary.emails = list(dict.fromkeys(emails))
            canary.periodicity = periodicity[2] if periodicity is not None else canary.periodicity

    @precondition(lambda self: self.model)
    @rule(data=st.data(), comment=comments, short=st.booleans(), alias=st.booleans())
    def trigger(self, data: st.DataObject, comment: str, short: bool, alias: bool) -> None:
        canary = self.pick(data)
        params = {"m" if alias else "comment": comment}
        if short:
            status, body = self.call(f"/{canary.id}", **params)
        else:
            status, body = self.call("trigger", id=canary.id, **params)
        assert (status == 200) == (len(comment) <= MAX_COMMENT_LENGTH), (status, body)
        if status == 200:
            assert body["unpaused"] == canary.paused and body["recovered"] is False
            canary.paused = False
            canary.history.insert(0, comment_text("Triggered", comment))

    @precondition(lambda self: self.model)
    @rule(data=st.data(), comment=comments, pause=st.booleans(), by=st.sampled_from(["id", "slug", "name"]))
    def pause_or_unpause(self, data: st.DataObject, comment: str, pause: bool, by: str) -> None:
        canary = self.pick(data)
        ident = {"id": canary.id, "slug": slugify(canary.name), "name": canary.name}[by]
        if by != "id" and not slugify(canary.name):
            return  # an empty slug cannot be sent: blank parameters count as absent
        status, body = self.call("pause" if pause else "unpause", comment=comment, **{by: ident})
        ok = canary.paused != pause and len(comment) <= MAX_COMMENT_LENGTH
        assert (status == 200) == ok, (status, body)
        if ok:
            canary.paused = pause
            canary.history.insert(0, comment_text("Paused" if pause else "Unpaused", comment))
            assert [h[1] for h in body["canary"]["history"]] == canary.history

    @precondition(lambda self: len(self.model) > 2)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        canary = self.pick(data)
        assert self.call("delete", id=canary.id)[0] == 200
        del self.model[canary.id]
        assert self.call("get", id=canary.id)[0] == 404

    @rule(identifier=st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=8, max_size=8))
    def unknown_canary(self, identifier: str) -> None:
        if identifier not in self.model:
            assert self.call("trigger", id=identifier)[0] == 404
            assert self.call(f"/{identifier}")[0] == 404

    @rule(
        search=st.one_of(st.text(max_size=8), st.sampled_from(["(", "(a|aa)+$", "[z-a]", "^n+$", "a{3,}"])),
        verbose=booleans,
        paused=booleans,
    )
    def list_canaries(self, search: str, verbose: str, paused: str) -> None:
        status, body = self.call("list", search=search, verbose=verbose, paused=paused)
        if parse_bool(verbose) is None or parse_bool(paused) is None:
            assert status == 400
        if status == 200:
            listed = {c["id"] for c in body["canaries"]}
            assert listed <= set(self.model)
            if not search and paused == "":
                assert listed == set(self.model)

    @rule(
        raw=st.sampled_from(
            [
                "create?name=x&periodicity=60&bogus=1",
                "create?name=%ff&periodicity=60",
                "create?periodicity=60",
                "get",
                "get?id=%c3",
                "update?name=x",
                "list?late=perhaps",
                "create?name=x&periodicity=60&paused=2",
                "nonsense",
                "create?name=%00&periodicity=-1",
                "trigger?id=abc&comment=%e2%82",
            ]
        )
    )
    def garbage(self, raw: str) -> None:
        status, body = raw_request(
            self.server.port, f"GET /coal-mine/v1/canary/{raw} HTTP/1.0\r\n\r\n".encode()
        )
        data = json.loads(body)
        self.check_response(status, data)
        assert status in (400, 404)

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def store_equals_model(self) -> None:
        stored = {c.id: c for c in self.server.logic.store.iter_canaries(history=True)}
        assert set(stored) == set(self.model)
        for canary_id, expected in self.model.items():
            actual = stored[canary_id]
            assert (
                actual.name,
                actual.slug,
                actual.periodicity,
                actual.description,
                actual.emails,
                actual.paused,
            ) == (
                expected.name,
                slugify(expected.name),
                expected.periodicity,
                expected.description,
                expected.emails,
                expected.paused,
            )
            assert [comment for _, comment in actual.history or []] == expected.history
            assert (actual.deadline is None) == actual.paused


ApiMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestApiStateMachine = ApiMachine.TestCase
