"""The HTTP side of alert channels: the canary parameters `webhook`, `slack` and
`repeat`, their JSON fields, delivery status in `get`, the test send
(/coal-mine/v1/canary/test) and the outbox endpoints (/coal-mine/v1/outbox,
/coal-mine/v1/outbox/drop). Registered by api.Api with one call."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from coal_mine import alert_rules
from coal_mine.business_logic import BusinessLogic
from coal_mine.channels import Channel, DeliveryError
from coal_mine.http_errors import HttpError
from coal_mine.models import BadRequestError, Canary, Notification

if TYPE_CHECKING:
    from coal_mine.api import Api, Request

log = logging.getLogger(__name__)

CANARY_PARAMETERS = ("webhook", "slack", "repeat")
OUTBOX_PATH = "/coal-mine/v1/outbox"
# The parameters of each endpoint registered here (openapi.yaml documents them); a
# command named by a path is served at that path rather than below api.URL_PREFIX.
PARAMETERS: dict[str, tuple[str, ...]] = {
    "test": ("id", "name", "slug"),
    OUTBOX_PATH: ("id",),
    f"{OUTBOX_PATH}/drop": ("id",),
}


def _urls(request: Request, name: str) -> list[str] | None:
    values = request.query.get(name)
    if values is None:
        return None
    return [] if values == ["-"] else values


def canary_arguments(request: Request, *, create: bool) -> dict[str, Any]:
    """The webhooks, slacks and repeat arguments of create/update (absent: not given)."""
    arguments: dict[str, Any] = {}
    for name, field_name in (("webhook", "webhooks"), ("slack", "slacks")):
        urls = _urls(request, name)
        if urls is not None:
            arguments[field_name] = urls
    repeat = request.string("repeat")
    if repeat is not None:
        try:
            seconds = float(repeat)
        except ValueError:
            raise BadRequestError(
                f'Bad repeat "{repeat}": give a number of seconds (0: no reminders)'
            ) from None
        if not math.isfinite(seconds):
            raise BadRequestError(f'Bad repeat "{repeat}": give a number of seconds (0: no reminders)')
        arguments["repeat"] = seconds
    return arguments


def canary_fields(canary: Canary, *, full: bool) -> dict[str, Any]:
    """The alert fields of a canary's JSON, only where used (a plain canary looks as in 0.7.1);
    URLs masked unless `full`."""
    show = (lambda url: url) if full else alert_rules.mask_url
    data: dict[str, Any] = {}
    if canary.webhooks:
        data["webhooks"] = [show(url) for url in canary.webhooks]
    if canary.slacks:
        data["slacks"] = [show(url) for url in canary.slacks]
    if canary.repeat:
        data["repeat"] = canary.repeat
    return data


def delivery_status(logic: BusinessLogic, canary: Canary) -> dict[str, Any]:
    """`delivery`: each target's last success and last error, and its pending deliveries
    (only once the canary has had something to deliver)."""
    pending: dict[tuple[str, str], int] = {}
    for note in logic.store.pending_notifications(canary.id):
        pending[note.channel, note.target] = pending.get((note.channel, note.target), 0) + 1
    statuses = {(s.channel, s.target): s for s in logic.store.target_statuses(canary.id)}
    keys = list(dict.fromkeys([*statuses, *pending]))
    if not keys:
        return {}
    rows = []
    for key in keys:
        status = statuses.get(key)
        rows.append(
            {
                "channel": key[0],
                "target": key[1],
                "pending": pending.get(key, 0),
                "last_success": status.last_success.isoformat() if status and status.last_success else None,
                "last_error": status.last_error if status else None,
                "last_error_at": status.last_error_at.isoformat()
                if status and status.last_error_at
                else None,
            }
        )
    return {"delivery": rows}


def _entry_json(note: Notification, logic: BusinessLogic) -> dict[str, Any]:
    now = logic.clock.now()
    return {
        "id": str(note.id),
        "canary": note.canary_id,
        "name": note.payload.get("name"),
        "event": note.kind,
        "channel": note.channel,
        "target": note.target,
        "attempts": note.attempts,
        "last_error": note.last_error,
        "permanent": note.permanent,
        "created": note.created.isoformat(),
        "age": round((now - note.created).total_seconds(), 3),
        "next_try": note.not_before.isoformat() if note.not_before else None,
    }


class AlertEndpoints:
    """The endpoints; `channels` (set by the server) are used for test sends."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.channels: Mapping[str, Channel | None] = {}

    def test(self, request: Request) -> dict[str, Any]:
        request.only(*PARAMETERS["test"])
        logic = self.api.logic
        canary = logic.get(self.api._identify(request))
        now = logic.clock.now()
        new = alert_rules.event(
            "test", canary, now, canary.deadline, canary.history or [], logic.targets(canary)
        )
        if not new.targets:
            raise BadRequestError("The canary has no email addresses, webhooks or slack URLs to test")
        results = []
        for channel_kind, target in new.targets:
            note = Notification(
                id=0,
                canary_id=canary.id,
                kind="test",
                created=now,
                not_before=now,
                payload=new.payload,
                event=f"test-{now.strftime('%H%M%S%f')}",
                channel=channel_kind,
                target=target,
            )
            results.append({"channel": channel_kind, "target": target, **self._try(note)})
        log.info("Test notification of canary %s: %s", canary.id, results)
        return {"status": "ok", "results": results}

    def _try(self, note: Notification) -> dict[str, Any]:
        channel = self.channels.get(note.channel)
        if channel is None:
            return {"ok": False, "error": f"the {note.channel} channel is not configured in this process"}
        try:
            rendered = channel.render(note, [note.target], now=note.created, delayed=False)
            refused = channel.deliver(rendered, [note.target])
            error: DeliveryError | None = refused.get(note.target)
        except DeliveryError as exc:
            error = exc
        except Exception as exc:  # a bug must not answer 500 for a test
            log.exception("Test notification to %s %s failed", note.channel, note.target)
            error = DeliveryError(f"{type(exc).__name__}: {exc}", retryable=False)
        finally:
            channel.close()
        return {"ok": error is None, "error": str(error) if error else None}

    def outbox(self, request: Request) -> dict[str, Any]:
        request.only(*PARAMETERS[OUTBOX_PATH])
        logic = self.api.logic
        entries = logic.store.pending_notifications(request.string("id"))
        return {"status": "ok", "outbox": [_entry_json(note, logic) for note in entries]}

    def drop(self, request: Request) -> dict[str, Any]:
        request.only(*PARAMETERS[f"{OUTBOX_PATH}/drop"])
        entry_id = request.required("id")
        logic = self.api.logic
        dropped = logic.store.drop_notification(entry_id)
        if dropped is None:
            raise HttpError("404 Not Found", f"No pending notification with id {entry_id!r}")
        log.warning(
            "Dropped pending %s notification %s of canary %s to %s %s by request (last error: %s)",
            dropped.kind,
            dropped.id,
            dropped.canary_id,
            dropped.channel,
            dropped.target,
            dropped.last_error or "none",
        )
        logic.on_change()
        return {"status": "ok", "dropped": _entry_json(dropped, logic)}


def register(api: Api) -> AlertEndpoints:
    """Add the endpoints to `api` (full key only)."""
    endpoints = AlertEndpoints(api)
    api.commands["test"] = endpoints.test
    api.commands[OUTBOX_PATH] = endpoints.outbox
    api.commands[f"{OUTBOX_PATH}/drop"] = endpoints.drop
    return endpoints


def configure(api: Api, channels: Mapping[str, Channel | None]) -> None:
    """Give `api` the channels that test sends use."""
    api.alerts.channels = channels
