"""The dashboard's pages. Each view takes a Page and returns a Response.

Every change goes through the business rules (`page.logic`), so the dashboard
validates exactly as the API does; their error messages are shown beside the
form field they are about.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any

from coal_mine.models import (
    CANARY_JSON_FIELDS,
    AlreadyExistsError,
    BadRequestError,
    Canary,
    CanaryNotFoundError,
    CoalMineError,
)
from coal_mine.ui import present
from coal_mine.ui.web import UI_PREFIX, Response, cookie_header, redirect

if TYPE_CHECKING:
    from coal_mine.ui import Page

log = logging.getLogger("coal_mine.ui")

PAGE_SIZE = 100
ZONE_COOKIE = "coal_mine_zone"
STATES = ("late", "ok", "paused")
CSRF_TEXT = (
    "This form has expired or did not come from this dashboard. Go back, reload the page and try again."
)
DONE = {
    "created": "Canary created.",
    "saved": "Changes saved.",
    "unchanged": "Nothing to change.",
    "triggered": "Canary triggered.",
    "paused": "Canary paused.",
    "unpaused": "Canary unpaused.",
    "deleted": "Canary deleted.",
    "zone": "Time zone saved.",
}
# The fields canary.html renders in its own way: Coal Mine 0.7.1's (models.CANARY_JSON_FIELDS as
# it was). A field added to the API's JSON since is not among them, so the page lists it as it is.
SHOWN_FIELDS = frozenset(CANARY_JSON_FIELDS[:11])
FORM_FIELDS = ("name", "periodicity", "description", "emails")
_EMAIL_SEPARATORS = re.compile(r"[\s,;]+")


# --- time zones and formatting ---------------------------------------------------------


def zone_context(page: Page) -> dict[str, Any]:
    """What every template needs to show times: the zone and formatting functions."""
    chosen = page.request.cookies.get(ZONE_COOKIE)
    zone: tzinfo | None = present.zone_or_none(chosen)
    name = chosen if zone is not None else "UTC"
    tz: tzinfo = zone or UTC
    now = page.logic.clock.now()
    return {
        "zone_name": name,
        "zone_chosen": zone is not None,
        "now": now,
        "local": lambda dt: present.local_text(dt, tz),
        "utc": present.utc_text,
        "ago": lambda dt: present.ago(dt, now),
        "iso": lambda dt: dt.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "seconds_text": present.seconds_text,
    }


# --- sign-in ---------------------------------------------------------------------------------


def _safe_next(target: str) -> str:
    """Where to go after signing in: only a path inside the dashboard."""
    if target.startswith(UI_PREFIX) and "//" not in target and "\\" not in target:
        return target
    return UI_PREFIX


def must_sign_in(page: Page) -> Response:
    request = page.request
    if request.method == "POST":
        return page.render("message.html", "403 Forbidden", title="Sign in", message="Sign in first.")
    if request.cross_site:
        # A link followed from another site (an alert email in webmail) arrives without the
        # SameSite=Strict cookie: reload the page from here, which sends it.
        return page.render("bounce.html", "200 OK")
    return redirect(f"{UI_PREFIX}signin?next={_quote(request.full_path)}")


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def sign_in_or_out(page: Page) -> Response:
    dashboard, request = page.dashboard, page.request
    now = page.logic.clock.now()
    if request.path == "signout":
        if request.method != "POST":
            return page.render("message.html", "405 Method Not Allowed", title="Not allowed", message="")
        page.session = dashboard.signer.new("" if dashboard.auth_key else "full", now)
        page.cookies = [dashboard.session_cookie(request, page.session)]
        return redirect(f"{UI_PREFIX}signin" if dashboard.auth_key else UI_PREFIX)
    target = _safe_next(request.query.get("next", "") or request.value("next"))
    if not dashboard.auth_key:
        return redirect(target)
    if request.method == "GET" or request.method == "HEAD":
        return page.render("signin.html", next=target, error=None)
    role = dashboard.signer.role_for_key(
        request.value("key"), dashboard.auth_key, dashboard.read_only_auth_key
    )
    if not role:
        log.warning("Dashboard sign-in with a wrong key from %s", request.remote)
        return page.render("signin.html", "401 Unauthorized", next=target, error="That key is not right.")
    log.info("Dashboard sign-in (%s) from %s", role, request.remote)
    page.session = dashboard.signer.new(role, now)  # a new nonce: no session fixation
    page.cookies = [dashboard.session_cookie(request, page.session)]
    return redirect(target)


# --- the list ----------------------------------------------------------------------------------


def canary_list(page: Page) -> Response:
    query = page.request.query
    search = query.get("search", "").strip()
    wanted = query.get("state", "")
    wanted = wanted if wanted in STATES else ""
    try:
        number = max(1, int(query.get("page", "1")))
    except ValueError:
        number = 1
    # One pass over every canary (without history): the counts, and late ones first.
    late: list[Canary] = []
    rest: list[Canary] = []  # ok and paused, in creation order
    paused = 0
    for canary in page.logic.list_canaries():
        if canary.paused:
            paused += 1
            rest.append(canary)
        elif canary.late:
            late.append(canary)
        else:
            rest.append(canary)
    total = len(late) + len(rest)
    counts = {"late": len(late), "paused": paused, "ok": total - len(late) - paused}
    error, status = None, "200 OK"
    if search:
        try:
            matching = {c.id for c in page.logic.list_canaries(search=search)}
        except BadRequestError as exc:
            matching, error, status = set(), str(exc), "400 Bad Request"
        late = [c for c in late if c.id in matching]
        rest = [c for c in rest if c.id in matching]
    if wanted == "late":
        rest = []
    elif wanted:
        late = []
        rest = [c for c in rest if c.paused == (wanted == "paused")]
    selected = late + rest
    pages = max(1, math.ceil(len(selected) / PAGE_SIZE))
    number = min(number, pages)
    shown = selected[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]
    now = page.logic.clock.now()
    last = page.logic.last_triggers([canary.id for canary in shown])
    rows = [_row(canary, last.get(canary.id), now) for canary in shown]
    return page.render(
        "list.html",
        status,
        rows=rows,
        total=total,
        counts=counts,
        matching=len(selected),
        search=search,
        wanted=wanted,
        search_error=error,
        page_number=number,
        pages=pages,
        first=(number - 1) * PAGE_SIZE + 1,
        filtered=bool(search or wanted),
        done=DONE.get(query.get("done", "")),
        link=lambda n: _list_link(search, wanted, n),
    )


def _list_link(search: str, wanted: str, number: int) -> str:
    from urllib.parse import urlencode

    params = {k: v for k, v in (("search", search), ("state", wanted)) if v}
    if number > 1:
        params["page"] = str(number)
    return UI_PREFIX + (f"?{urlencode(params)}" if params else "")


def _row(canary: Canary, last_trigger: datetime | None, now: datetime) -> dict[str, Any]:
    return {
        "canary": canary,
        "state": present.state(canary),
        "periodicity": present.periodicity(canary.periodicity, now),
        "last": last_trigger,
        "recipients": len(canary.emails),
    }


# --- one canary ----------------------------------------------------------------------------------


def _find(page: Page) -> Canary | Response:
    try:
        return page.logic.get(page.args["id"])
    except CanaryNotFoundError:
        return page.render("message.html", "404 Not Found", title="Not found", message="No such canary.")


def canary_page(page: Page) -> Response:
    canary = _find(page)
    if isinstance(canary, Response):
        return canary
    return _show(page, canary)


def _show(page: Page, canary: Canary, status: str = "200 OK", error: str | None = None) -> Response:
    from coal_mine.alert_api import delivery_status
    from coal_mine.api import canary_to_json

    schedule = page.logic.periodicity_schedule(canary)
    # Webhook URLs are often secrets: shown whole, with delivery status, to the full key only.
    full = page.session.can_write
    data = canary_to_json(canary, schedule, full=full)
    if full:
        data.update(delivery_status(page.logic, canary))
    base = page.dashboard.web.base_url or page.request.host_url
    short_url = f"{base}/{canary.id}"
    now = page.logic.clock.now()
    return page.render(
        "canary.html",
        status,
        canary=canary,
        state=present.state(canary),
        periodicity=present.periodicity(canary.periodicity, now),
        schedule=schedule,
        timeline=present.timeline(canary),
        outputs=page.logic.runs.kept_outputs(canary.id),  # what its job sent (run reporting)
        extra=present.extra_fields(data, SHOWN_FIELDS),
        short_url=short_url,
        long_url=f"{base}/coal-mine/v1/canary/trigger?id={canary.id}",
        curl=f"curl -s {short_url}",
        cron=f"{present.cron_schedule(canary.periodicity)} your-job && curl -s {short_url} >/dev/null",
        done=DONE.get(page.request.query.get("done", "")),
        error=error,
    )


def action(page: Page) -> Response:
    canary_id, verb = page.args["id"], page.args["action"]
    comment = page.request.value("comment").strip()
    try:
        if verb == "trigger":
            page.logic.trigger(canary_id, comment)
        elif verb == "pause":
            page.logic.pause(canary_id, comment)
        else:
            page.logic.unpause(canary_id, comment)
    except CanaryNotFoundError:
        return page.render("message.html", "404 Not Found", title="Not found", message="No such canary.")
    except BadRequestError as exc:
        canary = _find(page)
        return canary if isinstance(canary, Response) else _show(page, canary, "400 Bad Request", str(exc))
    done = {"trigger": "triggered", "pause": "paused", "unpause": "unpaused"}[verb]
    return redirect(f"{UI_PREFIX}canary/{canary_id}?done={done}")


def delete_confirmation(page: Page) -> Response:
    canary = _find(page)
    if isinstance(canary, Response):
        return canary
    return page.render("delete.html", canary=canary)


def delete(page: Page) -> Response:
    try:
        page.logic.delete(page.args["id"])
    except CanaryNotFoundError:
        return page.render("message.html", "404 Not Found", title="Not found", message="No such canary.")
    return redirect(f"{UI_PREFIX}?done=deleted")


# --- create and edit -------------------------------------------------------------------------------


def _field_for(exc: CoalMineError) -> str:
    """Which form field a business-rule error is about ("" when none)."""
    text = str(exc)
    if isinstance(exc, AlreadyExistsError) or text.startswith("Name"):
        return "name"
    if "eriodicity" in text:
        return "periodicity"
    if text.startswith("Description"):
        return "description"
    if "mail" in text:
        return "emails"
    return ""


def _form_values(page: Page) -> dict[str, str]:
    return {name: page.request.value(name) for name in FORM_FIELDS}


def _parse(values: dict[str, str]) -> tuple[float | str, list[str]]:
    from coal_mine.api import parse_periodicity

    text = values["periodicity"].strip()
    if not text:
        raise BadRequestError("Periodicity is required: a number of seconds or a schedule")
    emails = [e for e in _EMAIL_SEPARATORS.split(values["emails"]) if e]
    return parse_periodicity(text), emails


def new_form(page: Page) -> Response:
    values = dict.fromkeys(FORM_FIELDS, "")
    return page.render("form.html", canary=None, values=values, errors={}, paused=False)


def create(page: Page) -> Response:
    values = _form_values(page)
    paused = page.request.value("paused") == "on"
    try:
        periodicity, emails = _parse(values)
        canary = page.logic.create(values["name"].strip(), periodicity, values["description"], emails, paused)
    except (BadRequestError, AlreadyExistsError) as exc:
        errors = {_field_for(exc): str(exc)}
        return page.render(
            "form.html", "400 Bad Request", canary=None, values=values, errors=errors, paused=paused
        )
    return redirect(f"{UI_PREFIX}canary/{canary.id}?done=created")


def edit_form(page: Page) -> Response:
    canary = _find(page)
    if isinstance(canary, Response):
        return canary
    periodicity = canary.periodicity
    values = {
        "name": canary.name,
        "periodicity": periodicity if isinstance(periodicity, str) else f"{periodicity:g}",
        "description": canary.description,
        "emails": "\n".join(canary.emails),
    }
    return page.render("form.html", canary=canary, values=values, errors={}, paused=False)


def edit(page: Page) -> Response:
    canary = _find(page)
    if isinstance(canary, Response):
        return canary
    values = _form_values(page)
    try:
        periodicity, emails = _parse(values)
        page.logic.update(
            canary.id,
            name=values["name"].strip(),
            periodicity=periodicity,
            description=values["description"],
            emails=emails,
        )
    except (BadRequestError, AlreadyExistsError) as exc:
        if str(exc) == "No updates specified":
            return redirect(f"{UI_PREFIX}canary/{canary.id}?done=unchanged")
        errors = {_field_for(exc): str(exc)}
        return page.render(
            "form.html", "400 Bad Request", canary=canary, values=values, errors=errors, paused=False
        )
    return redirect(f"{UI_PREFIX}canary/{canary.id}?done=saved")


# --- time zone ---------------------------------------------------------------------------------------


def zone_form(page: Page) -> Response:
    return page.render(
        "zone.html",
        zones=present.available_zones(),
        next=_safe_next(page.request.query.get("next", "")),
        error=None,
    )


def set_zone(page: Page) -> Response:
    name = page.request.value("zone").strip()
    target = _safe_next(page.request.value("next"))
    if name and present.zone_or_none(name) is None:
        return page.render(
            "zone.html",
            "400 Bad Request",
            zones=present.available_zones(),
            next=target,
            error=f"{name!r} is not an IANA time zone name",
        )
    secure = page.request.https
    if name:
        page.cookies.append(cookie_header(ZONE_COOKIE, name, path=UI_PREFIX, max_age=31536000, secure=secure))
    else:
        page.cookies.append(cookie_header(ZONE_COOKIE, "", path=UI_PREFIX, max_age=0, secure=secure))
    return redirect(target)
