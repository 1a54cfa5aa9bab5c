"""Every size and time limit the server enforces on its clients, in one place.

They are generous on purpose: no real client comes near them, and each one
turns hostile input into a clear 4xx error instead of work or storage. The
table in README.md ("Limits and security") and the OpenAPI description (openapi.yaml) quote
these numbers; tests/test_openapi.py checks that they agree.
"""

from __future__ import annotations

from coal_mine.schedule import MAX_PERIODICITY

__all__ = [
    "MAX_COMMENT_LENGTH",
    "MAX_DESCRIPTION_LENGTH",
    "MAX_EMAILS",
    "MAX_EMAIL_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_PENDING_CONNECTIONS",
    "MAX_PERIODICITY",
    "MAX_REQUEST_BODY",
    "MAX_REQUEST_HEAD",
    "MAX_REQUEST_LINE",
    "MAX_RID_LENGTH",
    "MAX_SCHEDULE_LENGTH",
    "MAX_SEARCH_LENGTH",
    "MAX_SEARCH_REPEAT",
    "MAX_URLS",
    "MAX_URL_LENGTH",
    "RESPONSE_TIME_LIMIT",
    "SEARCH_TIME_LIMIT",
]

# HTTP (bytes, as sent on the wire).
MAX_REQUEST_LINE = 32768  # "GET /path?query HTTP/1.1"; longer is a 414
MAX_REQUEST_HEAD = 65536  # request line and all headers; longer is a 431
MAX_REQUEST_BODY = 262144  # a dashboard form (Content-Length); longer, or chunked, is a 413
MAX_PENDING_CONNECTIONS = 512  # connections still sending their request head
RESPONSE_TIME_LIMIT = 120.0  # seconds to write a whole response, however steadily the client reads

# Canary fields (characters, after URL decoding); longer is a 400.
MAX_NAME_LENGTH = 2000
MAX_DESCRIPTION_LENGTH = 10000
MAX_COMMENT_LENGTH = 2000
MAX_RID_LENGTH = 100  # a run id (rid) pairing a start with its end
MAX_EMAIL_LENGTH = 254  # the longest address SMTP can carry (RFC 5321)
MAX_EMAILS = 100
MAX_SCHEDULE_LENGTH = 10000  # a periodicity schedule string
MAX_URL_LENGTH = 2000  # a webhook or slack URL
MAX_URLS = 20  # webhook URLs, and again slack URLs, per canary

# list?search=: pattern length (characters) and the total matching time (seconds).
MAX_SEARCH_LENGTH = 1000
MAX_SEARCH_REPEAT = 10000  # product of all counted repetitions, e.g. {3} and {2,5}: 15
SEARCH_TIME_LIMIT = 1.0
