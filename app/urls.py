"""URLs as they may be shown: a receiver's token or a user's password never leaves in one.

Query values, user info (`user:pass@`) and fragments can carry credentials, and libraries
quote whole URLs in their messages (httpx logs every request with it), so anything that may
hold a URL goes through `redact_urls` before it reaches a log line, an error, the audit or
an answer.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

HIDDEN = "***"
# A URL with a scheme, or a bare query string after a path ("POST /hooks?token=…").
_FOUND = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s'"<>]+|(?<=\S)\?[^\s'"<>#]+""")


def redact_urls(text: str) -> str:
    """`text` (a URL, or a message quoting some) with user info and query values as ***."""
    return _FOUND.sub(lambda match: _redact(match.group()), text)


def _redact(found: str) -> str:
    if found.startswith("?"):
        return "?" + _query(found[1:])
    try:
        parts = urlsplit(found)
    except ValueError:  # not parsable (a broken IPv6 host): show nothing past the scheme
        return found.split("://", 1)[0] + "://" + HIDDEN
    netloc = parts.netloc
    if "@" in netloc:
        netloc = HIDDEN + "@" + netloc.rpartition("@")[2]
    fragment = HIDDEN if parts.fragment else ""
    return urlunsplit(parts._replace(netloc=netloc, query=_query(parts.query), fragment=fragment))


def _query(query: str) -> str:
    """Names stay (they say what the receiver expects), values go; a bare value goes too."""
    pieces = []
    for piece in query.split("&"):
        name, equals, value = piece.partition("=")
        if equals:
            pieces.append(f"{name}={HIDDEN}" if value else piece)
        else:
            pieces.append(HIDDEN if piece else piece)
    return "&".join(pieces)


class RedactUrls(logging.Filter):
    """For loggers that quote URLs themselves (httpx's request lines, tracebacks)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact_urls(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_urls(logging.Formatter().formatException(record.exc_info))
        return True


REDACT_URLS = RedactUrls()
