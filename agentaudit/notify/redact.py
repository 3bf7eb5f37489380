"""Keeping receivers' secrets out of logs and errors.

A Slack incoming-webhook URL *is* a token (its path); other receivers carry credentials in
the URL's user info, query or headers. Everything this package logs about a receiver goes
through its `Redactor`, including exception texts (aiohttp puts the request URL into some
of its error messages).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from yarl import URL

MASK = "[redacted]"


def display_url(url: str) -> str:
    """What may be shown of a URL: scheme, host and port, never path, query or user info."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}/…"


class Redactor:
    """Replaces every secret substring of a text with `[redacted]`."""

    def __init__(self, url: str, header_values: list[str] | tuple[str, ...] = ()) -> None:
        parts = urlsplit(url)
        # A header value and its parts: "Bearer <token>" shows up as the token alone too.
        candidates = [url, *header_values, *(w for v in header_values for w in v.split())]
        # The path and query alone appear in some messages (a proxy's, a server's echo).
        tail = parts.path + (f"?{parts.query}" if parts.query else "")
        candidates += [tail, parts.query, parts.password or "", parts.username or ""]
        # aiohttp's errors (a malformed answer's ClientResponseError) quote the URL as yarl
        # writes it: percent-escapes decoded or upper-cased, a space as "+". Before, a token
        # written "abc%7e…" in the routing file was logged as "abc~…", unredacted.
        candidates += _as_yarl_writes(url)
        # Longest first, so a secret that contains another is replaced whole; very short
        # strings (a path of "/") are not secrets and would mangle every message.
        self._secrets = sorted({c for c in candidates if len(c) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


def _as_yarl_writes(url: str) -> list[str]:
    """The URL and its parts as yarl (so aiohttp) renders them."""
    try:
        parsed = URL(url)
        forms = [
            str(parsed),
            str(parsed.with_user(None)),
            parsed.path_qs,
            parsed.raw_path_qs,
            parsed.path,
            parsed.raw_path,
            parsed.query_string,
            parsed.raw_query_string,
            parsed.password or "",
            parsed.user or "",
        ]
    except (ValueError, TypeError):  # not a URL yarl takes: aiohttp could not post to it
        return []
    return [str(form) for form in forms]
