"""Canaries that never use run reporting get exactly Coal Mine 0.7.1's answers, on every store,
and their records carry none of its fields."""

from __future__ import annotations

import json
from pathlib import Path

from coal_mine.abstract_store import RUN_FIELDS, AbstractStore
from coal_mine.clock import FakeClock
from coal_mine.models import Canary
from tests import runs_compat_script
from tests.runs_support import RunServer

GOLDEN = Path(__file__).parent / "fixtures" / "runs_compat_golden.json"


def test_answers_are_unchanged(store: AbstractStore) -> None:
    """The golden answers were made by the code from before run reporting existed."""
    clock = FakeClock(runs_compat_script.START)
    with RunServer(store, clock) as srv:

        def call(method: str, target: str, body: bytes | None) -> tuple[int, bytes]:
            return srv.request(method, target, body)

        answers = runs_compat_script.run(call, srv.tick)
        records = list(store.iter_canaries(history=True))
    assert answers == json.loads(GOLDEN.read_text())
    defaults = Canary(id="x", name="x", slug="x", periodicity=1.0)
    assert len(records) == 2
    for canary in records:
        assert all(getattr(canary, name) == getattr(defaults, name) for name in RUN_FIELDS)
    # A POST body sent with a trigger is kept as output (where 0.7.1 never looks), nothing else.
    outputs = {canary.name: [out.text for _, out in store.outputs(canary.id)] for canary in records}
    assert outputs == {"Nightly Backup": ["a POST body is ignored"], "Third": []}
