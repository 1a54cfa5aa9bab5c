"""Status badges over the real HTTP server in this process, on every store."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from coal_mine.abstract_store import AbstractStore
from coal_mine.api import Api
from coal_mine.badges import SERVER_BADGE_SETTING
from coal_mine.business_logic import BusinessLogic
from coal_mine.clock import FakeClock
from coal_mine.models import Canary
from coal_mine.watcher import Watcher
from tests.helpers import InProcessServer

SVG = "{http://www.w3.org/2000/svg}"


def fetch(server: InProcessServer, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(server.base_url + path, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture
def served(store: AbstractStore, clock: FakeClock) -> Iterator[InProcessServer]:
    with InProcessServer(Api(BusinessLogic(store, clock), auth_key="full")) as server:
        yield server


def badge_key(server: InProcessServer, canary_id: str) -> str:
    status, body = server.call("get", auth_key="full", id=canary_id)
    assert status == 200
    return body["canary"]["badge_key"]


def svg_texts(body: bytes) -> tuple[ET.Element, list[str]]:
    root = ET.fromstring(body)  # valid XML, or this raises
    return root, [t.text or "" for t in root.iter(f"{SVG}text")]


def test_states_and_formats(served: InProcessServer, clock: FakeClock) -> None:
    logic = served.app.logic
    canary = logic.create("Nightly backup", 60.0)
    key = badge_key(served, canary.id)
    assert len(key) == 32 and key != canary.id
    status, headers, body = fetch(served, f"/coal-mine/v1/badge/{key}.svg")
    assert status == 200 and headers["Content-Type"] == "image/svg+xml; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache" and headers["Access-Control-Allow-Origin"] == "*"
    root, texts = svg_texts(body)
    assert texts == ["Nightly backup", "ok"] and (root.get("width"), root.get("height")) == ("200", "20")
    assert "#4c1" in body.decode()
    clock.advance(61)
    Watcher(logic).step()
    _, _, body = fetch(served, f"/coal-mine/v1/badge/{key}.svg")
    assert svg_texts(body)[1] == ["Nightly backup", "late"] and "#e05d44" in body.decode()
    logic.pause(canary.id)
    status, headers, body = fetch(served, f"/coal-mine/v1/badge/{key}.json")
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
    assert json.loads(body) == {
        "label": "Nightly backup",
        "message": "paused",
        "name": "Nightly backup",
        "status": "paused",
    }
    status, _, body = fetch(served, f"/coal-mine/v1/badge/{key}.shields")
    assert json.loads(body) == {
        "schemaVersion": 1,
        "label": "Nightly backup",
        "message": "paused",
        "color": "lightgrey",
    }


def test_badge_reveals_neither_id_nor_trigger_url(served: InProcessServer) -> None:
    canary = served.app.logic.create("Public job", 60.0)
    key = badge_key(served, canary.id)
    for fmt in ("svg", "json", "shields"):
        body = fetch(served, f"/coal-mine/v1/badge/{key}.{fmt}")[2].decode()
        assert canary.id not in body and "/coal-mine/v1/canary" not in body


def test_name_is_escaped(served: InProcessServer) -> None:
    canary = served.app.logic.create("A<b>&\"c'", 60.0)
    body = fetch(served, f"/coal-mine/v1/badge/{badge_key(served, canary.id)}.svg")[2]
    assert b"<b>" not in body and b"&amp;" in body and b"&lt;b&gt;" in body and b"&quot;" in body
    _, texts = svg_texts(body)
    assert texts[0] == "A<b>&\"c'"


def test_long_name_keeps_the_size(served: InProcessServer) -> None:
    canary = served.app.logic.create("A very long canary name that goes on and on " * 3, 60.0)
    root, texts = svg_texts(fetch(served, f"/coal-mine/v1/badge/{badge_key(served, canary.id)}.svg")[2])
    assert (root.get("width"), root.get("height")) == ("200", "20")
    assert len(texts[0]) == 20 and texts[0].endswith("\u2026")


@pytest.mark.parametrize(
    "path",
    [
        "/coal-mine/v1/badge/" + "0" * 32 + ".svg",
        "/coal-mine/v1/badge/" + "0" * 32 + ".json",
        "/coal-mine/v1/badge/short.svg",
        "/coal-mine/v1/badge/{key}.png",
        "/coal-mine/v1/badge/{key}",
        "/coal-mine/v1/badge/{id}.svg",
        "/coal-mine/v1/badge/",
        "/coal-mine/v1/badge/{key}.svg/x",
    ],
)
def test_unknown_badge_is_one_404(served: InProcessServer, path: str) -> None:
    canary = served.app.logic.create("Exists", 60.0)
    path = path.format(key=badge_key(served, canary.id), id=canary.id)
    status, headers, body = fetch(served, path)
    assert status == 404 and json.loads(body) == {"status": "error", "error": "404 Not Found: no such badge"}
    assert headers["Access-Control-Allow-Origin"] == "*"


def test_404_does_not_tell_whether_canaries_exist(store: AbstractStore, clock: FakeClock) -> None:
    with InProcessServer(Api(BusinessLogic(store, clock))) as empty:
        nothing = fetch(empty, "/coal-mine/v1/badge/" + "1" * 32 + ".svg")
        empty.app.logic.create("Now one exists", 60.0)
        something = fetch(empty, "/coal-mine/v1/badge/" + "1" * 32 + ".svg")
        assert nothing[0] == something[0] == 404 and nothing[2] == something[2]


def test_server_badge(served: InProcessServer, store: AbstractStore, clock: FakeClock) -> None:
    server_key = served.call("/coal-mine/v1/health", auth_key="full")[1]["badge_key"]
    assert store.setting(SERVER_BADGE_SETTING) == server_key
    path = f"/coal-mine/v1/badge/{server_key}.json"
    assert json.loads(fetch(served, path)[2])["message"] == "no canaries"
    logic = served.app.logic
    for name in ("One", "Two", "Three"):
        logic.create(name, 60.0)
    logic.create("Held", 60.0, paused=True)
    assert json.loads(fetch(served, path)[2]) == {
        "label": "coal mine",
        "message": "3 ok",
        "status": "ok",
        "canaries": 4,
        "late": 0,
        "paused": 1,
    }
    clock.advance(61)
    Watcher(logic).step()
    _, texts = svg_texts(fetch(served, f"/coal-mine/v1/badge/{server_key}.svg")[2])
    assert texts == ["coal mine", "3 late"]


def test_canary_without_key_gets_one_on_get(served: InProcessServer, store: AbstractStore) -> None:
    store.create(Canary(id="legacyid", name="From 0.7", slug="from-07", periodicity=60.0, history=[]))
    key = badge_key(served, "legacyid")
    assert len(key) == 32 and store.get("legacyid").badge_key == key
    assert badge_key(served, "legacyid") == key
    assert fetch(served, f"/coal-mine/v1/badge/{key}.svg")[0] == 200
