"""The README tells the truth: its commands, endpoints and examples are checked here."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from coal_mine.api import Api
from coal_mine.business_logic import BusinessLogic
from coal_mine.cli import build_parser
from coal_mine.memory_store import MemoryStore
from tests.helpers import REPO, ServerProcess

README = (REPO / "README.md").read_text()
EXAMPLE_BASE = "http://localhost:8080"


def shell_blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", README, flags=re.S)


def test_two_setup_commands_and_ci_agree() -> None:
    install, tests = (block.strip() for block in shell_blocks("sh")[:2])
    assert "pip install ." in install and "coal-mine" in install
    assert "pytest" in tests
    assert tests in (REPO / ".ci" / "run").read_text()


@pytest.mark.parametrize("command", sorted(Api(BusinessLogic(MemoryStore())).commands))
def test_every_endpoint_is_documented(command: str) -> None:
    assert re.search(rf"^\| `{command}` \|", README, flags=re.M), f"API table lacks {command}"


def cli_commands() -> list[str]:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(subparsers.choices)


@pytest.mark.parametrize("command", cli_commands())
def test_every_cli_command_is_documented(command: str) -> None:
    assert f"cmcli {command}" in README or f"`{command}`" in README


def test_every_cli_option_is_documented() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = set()
    for sub in subparsers.choices.values():
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option not in ("--help", "--version") and option not in README:
                    missing.add(option)
    assert not missing


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_examples_and_watchdog_line(tmp_path: Path) -> None:
    examples = [
        line[2:]
        for block in shell_blocks("console")
        for line in block.splitlines()
        if line.startswith("$ curl")
    ]
    assert len(examples) >= 4
    with ServerProcess(tmp_path / "readme") as server:
        canary_id = None
        for example in examples:
            command = example.replace(EXAMPLE_BASE, server.base_url)
            if canary_id:
                command = command.replace("fbkvlsby", canary_id)
            result = subprocess.run(
                ["bash", "-c", command + " -s"], capture_output=True, text=True, timeout=30
            )
            body = json.loads(result.stdout)
            assert body["status"] == "ok", (example, body)
            if "canary" in body and canary_id is None:
                canary_id = body["canary"]["id"]
                shown = json.loads(
                    re.search(r"\$ curl [^\n]*create[^\n]*\n(\{.*?\n\})", README, flags=re.S).group(1)
                )
                assert set(shown["canary"]) == set(body["canary"])
        history = server.call("get", id=canary_id)[1]["canary"]["history"]
        assert [c for _, c in history] == [
            "Triggered (long form trigger url)",
            "Triggered (short form trigger url)",
            "Canary created",
        ]

        cron = next(line for line in README.splitlines() if "grep -q -s" in line)
        command = " ".join(cron.split()[5:]).replace("http://coal-mine.example.com", server.base_url)
        ok = subprocess.run(
            ["bash", "-c", command.replace("atvywzoa", canary_id)], capture_output=True, text=True, timeout=30
        )
        assert ok.returncode == 0 and ok.stdout == ""
        failing = subprocess.run(
            ["bash", "-c", command.replace("atvywzoa", "zzzzzzzz")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert failing.stdout.strip() == "Failed to trigger canary."
