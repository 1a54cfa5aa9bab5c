"""openapi.yaml stays true: same routes and parameters as the server, same limits, and a fuzz run
of the whole description against a live server with zero server errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from coal_mine import limits
from coal_mine.api import PARAMETERS, URL_PREFIX, Api
from coal_mine.business_logic import BusinessLogic
from coal_mine.memory_store import MemoryStore
from coal_mine.ops_routes import DOCUMENTED_PATHS
from tests.helpers import REPO, ServerProcess

SPEC = yaml.safe_load((REPO / "openapi.yaml").read_text())
FUZZ_SECONDS = int(os.environ.get("COAL_MINE_FUZZ_SECONDS", "25"))


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = SPEC
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def path_of(command: str) -> str:
    """Where a command is served: below URL_PREFIX, unless it is named by a path of its own."""
    return command if command.startswith("/") else URL_PREFIX + command


def operation(path: str) -> dict[str, Any]:
    return SPEC["paths"][path]["get"]


def query_parameters(path: str) -> dict[str, dict[str, Any]]:
    params = [resolve(p) for p in operation(path)["parameters"]]
    return {p["name"]: p for p in params if p["in"] == "query"}


def test_documents_exactly_the_routes_the_server_has() -> None:
    commands = Api(BusinessLogic(MemoryStore())).commands
    assert SPEC["openapi"].startswith("3.")
    short_forms = {"/{id}", "/{id}/start", "/{id}/fail", "/{id}/log", "/{id}/{exit_status}"}
    canary_paths = {path_of(command) for command in commands} | short_forms
    assert set(SPEC["paths"]) == canary_paths | set(DOCUMENTED_PATHS)
    assert set(PARAMETERS) == set(commands)


@pytest.mark.parametrize("command", sorted(PARAMETERS))
def test_documents_exactly_the_parameters_each_command_accepts(command: str) -> None:
    documented = query_parameters(path_of(command))
    assert set(documented) == set(PARAMETERS[command]) | {"auth_key"}
    required = {name for name, p in documented.items() if p.get("required")}
    expected = {"create": {"name", "periodicity"}, "/coal-mine/v1/outbox/drop": {"id"}}
    assert required == expected.get(command, set())


def test_short_trigger_path() -> None:
    params = [resolve(p) for p in operation("/{id}")["parameters"]]
    assert {(p["name"], p["in"]) for p in params} == {
        ("id", "path"),
        ("comment", "query"),
        ("m", "query"),
        ("rid", "query"),
        ("auth_key", "query"),
    }


@pytest.mark.parametrize("word", ["start", "fail", "log"])
def test_short_run_paths(word: str) -> None:
    """Each short form takes what its long form takes, with the id in the path."""
    params = [resolve(p) for p in operation(f"/{{id}}/{word}")["parameters"]]
    long_form = {n for n in PARAMETERS[word] if n not in ("id", "slug", "name", "exit_status")}
    assert {p["name"] for p in params if p["in"] == "query"} == long_form | {"auth_key"}
    params = [resolve(p) for p in operation("/{id}/{exit_status}")["parameters"]]
    assert {(p["name"], p["in"]) for p in params if p["in"] == "path"} == {
        ("id", "path"),
        ("exit_status", "path"),
    }


@pytest.mark.parametrize("path", sorted(set(SPEC["paths"]) - set(DOCUMENTED_PATHS)))
def test_every_operation_documents_success_and_every_error(path: str) -> None:
    responses = operation(path)["responses"]
    assert set(responses) == {"200", "400", "401", "404", "414", "431", "503"}
    for status, response in responses.items():
        schema = resolve(resolve(response)["content"]["application/json"]["schema"])
        assert ("error" in schema["properties"]) == (status != "200")


@pytest.mark.parametrize("path", DOCUMENTED_PATHS)
def test_operations_paths_document_their_answers(path: str) -> None:
    """health, metrics and badges: their own success types, and the errors they can give."""
    responses = operation(path)["responses"]
    errors = {"404"} if "/badge/" in path else {"400", "401"}
    assert set(responses) == {"200", "414", "431", "503"} | errors
    assert ("text/plain" in resolve(responses["200"])["content"]) == path.endswith("/metrics")
    assert ("image/svg+xml" in resolve(responses["200"])["content"]) == path.endswith(".svg")


def test_documented_limits_are_the_enforced_ones() -> None:
    params = resolve({"$ref": "#/components/parameters/name_new"})
    assert params["schema"]["maxLength"] == limits.MAX_NAME_LENGTH
    by_name = {
        **query_parameters(URL_PREFIX + "create"),
        **query_parameters(URL_PREFIX + "trigger"),
        **query_parameters(URL_PREFIX + "list"),
    }
    assert by_name["description"]["schema"]["maxLength"] == limits.MAX_DESCRIPTION_LENGTH
    assert by_name["comment"]["schema"]["maxLength"] == limits.MAX_COMMENT_LENGTH
    assert by_name["m"]["schema"]["maxLength"] == limits.MAX_COMMENT_LENGTH
    assert by_name["rid"]["schema"]["maxLength"] == limits.MAX_RID_LENGTH
    assert by_name["search"]["schema"]["maxLength"] == limits.MAX_SEARCH_LENGTH
    assert by_name["periodicity"]["schema"]["maxLength"] == limits.MAX_SCHEDULE_LENGTH
    assert by_name["email"]["schema"]["maxItems"] == limits.MAX_EMAILS
    assert by_name["email"]["schema"]["items"]["maxLength"] == limits.MAX_EMAIL_LENGTH
    responses = SPEC["components"]["responses"]
    assert str(limits.MAX_REQUEST_LINE) in responses["UriTooLong"]["description"]
    assert str(limits.MAX_REQUEST_HEAD) in responses["HeadTooLarge"]["description"]
    periodicity = SPEC["components"]["schemas"]["Periodicity"]["oneOf"][0]
    assert periodicity["maximum"] == limits.MAX_PERIODICITY


def test_schemathesis_fuzz_run_finds_no_server_error(tmp_path: Path) -> None:
    """Time-boxed (COAL_MINE_FUZZ_SECONDS, default 25) against a real server process."""
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    if st is None:
        pytest.fail("schemathesis is not installed (pip install -r requirements_dev.txt)")
    with ServerProcess(tmp_path / "server") as server:
        # Ready first: /health answers 503 (a server error to the fuzzer) until the
        # worker in this process has reported its first deadline scan.
        deadline = time.monotonic() + 15
        while server.call("/coal-mine/v1/health")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        result = subprocess.run(
            [
                st,
                "run",
                str(REPO / "openapi.yaml"),
                "--url",
                server.base_url,
                "--max-time",
                str(FUZZ_SECONDS),
                "--seed",
                "7",
                "--no-color",
                "--generation-database",
                "none",
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,"
                "response_schema_conformance",
                "--report-dir",
                str(tmp_path / "report"),
            ],
            capture_output=True,
            text=True,
            timeout=FUZZ_SECONDS + 120,
            cwd=tmp_path,
        )
        log = server.log()
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout.split("SUMMARY")[-1]
    assert "Traceback" not in log and "Unexpected error" not in log
