"""PII and secret redaction: pure functions over text, regexes compiled once at import.

Classes and their placeholders: EMAIL, PHONE, CARD, SECRET → `[REDACTED:<CLASS>]`.
Passes run secrets first (keys and JWTs contain digit runs that would otherwise be half
taken as cards or phones), then emails, cards, phones; placeholders contain no digits or
`@`, so a later pass never re-matches an earlier replacement.

Precision choices, measured on the labelled sample in the unit tests:
- cards must pass Luhn and start like an issued card number (2–6), which keeps epoch
  milliseconds, order numbers and random 16-digit ids out;
- phones need a leading `+`/`00`, a NANP shape with separators, or a trunk `0` with
  separators — plain digit runs, dates, versions and IPs are never phones;
- a bearer token or `password=`-style assignment keeps its label and loses its value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

EMAIL, PHONE, CARD, SECRET = "EMAIL", "PHONE", "CARD", "SECRET"
CLASSES = (EMAIL, PHONE, CARD, SECRET)

_SECRET_TOKENS = re.compile(
    r"""
      \bsk-ant-[A-Za-z0-9]+-[A-Za-z0-9_-]{20,}                  # Anthropic
    | \bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}          # OpenAI (legacy and project)
    | \b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b                    # AWS access key id
    | \bgh[pousr]_[A-Za-z0-9]{36,255}\b                          # GitHub classic tokens
    | \bgithub_pat_[A-Za-z0-9_]{22,255}\b                        # GitHub fine-grained tokens
    | \bxox[abprs]-[A-Za-z0-9-]{10,}                             # Slack
    | \bAIza[0-9A-Za-z_-]{35}                                    # Google API key
    | \b[rs]k_(?:live|test)_[0-9A-Za-z]{16,}                     # Stripe secret/restricted keys
    | \beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*  # JWT header.payload.sig
    | \bhf_[A-Za-z0-9]{30,}\b                                    # Hugging Face tokens
    | -----BEGIN[A-Z\ ]*PRIVATE\ KEY-----                       # PEM private key, to its end
      (?:[\s\S]*?-----END[A-Z\ ]*PRIVATE\ KEY-----|[\s\S]*)     # (or to the text's end)
    """,
    re.VERBOSE,
)
# Label kept, value replaced: "Authorization: Bearer <tok>", "Basic <b64>", "password=<v>",
# any "Authorization: <scheme> <credentials>", "token=<v>" (URL query, env), the password of
# a URL's user info ("postgres://user:<pw>@host").
_SECRET_VALUES = re.compile(
    r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/-]{16,}=*"
    r"|(\bauthorization\s*[:=]\s*[\"']?[a-z-]+\s+)(?!\[REDACTED)(?=[^\s\"',;]*\d)[^\s\"',;]{8,}"
    r"|(\b(?:[a-z0-9]+[_-])*token=)(?!\[REDACTED)[^\s&\"',;]{8,}"
    r"|(\b[a-z][a-z0-9+.-]*://[^\s/:@\"']+:)(?!\[REDACTED)[^\s/@\"']+(?=@)"
    r"|(\bbasic\s+)[A-Za-z0-9+/]{12,}={0,2}"
    r"|(\b(?:[a-z0-9]+[_-])*(?:password|passwd|pwd|secret|secret[_-]?(?:access[_-]?)?key|api[_-]?key"
    r"|access[_-]?token|auth[_-]?token|client[_-]?secret|private[_-]?key)"
    r"[\"']?\s*[:=]\s*[\"']?)(?!\[REDACTED)[^\s\"',;]{6,}"
)
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
_CARD = re.compile(r"(?<![\w+.])\d(?:[ -]?\d){12,18}(?![\w]|[.,-]\d)")
_CARD_PREFIX = re.compile(r"[3-6]|2[2-7]")
_PHONE = re.compile(
    r"(?<![\w+./-])(?:"
    r"(?P<intl>(?:\+|\b00)[1-9]\d{0,2}(?:[ .-]?\(?\d{1,4}\)?){2,6})"  # +CC … / 00CC …
    r"|(?P<nanp>(?:1[ .-])?\(?[2-9]\d{2}\)?[ .-]?[2-9]\d{2}[ .-]\d{4})"  # (415) 555-2671
    r"|(?P<trunk>0\d{1,4}[ -]\d{3,4}[ -]?\d{3,4}|0[1-9](?:[ .]\d{2}){4})"  # 020 7946 0958
    r")(?![\w-]|[.,]\d)"
)


def luhn_valid(digits: str) -> bool:
    """Luhn (mod 10) checksum of a string of decimal digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _is_card(match: re.Match[str]) -> bool:
    digits = _digits(match.group())
    return 13 <= len(digits) <= 19 and bool(_CARD_PREFIX.match(digits)) and luhn_valid(digits)


def _is_phone(match: re.Match[str]) -> bool:
    n = len(_digits(match.group()))
    if match.group("intl"):
        n -= 2 if match.group().startswith("00") else 0
        return 8 <= n <= 15  # E.164: at most 15 digits including the country code
    return 9 <= n <= 12 if match.group("trunk") else True


@dataclass(frozen=True, slots=True)
class RedactionResult:
    """Redacted text and how many replacements of each class were made."""

    text: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.counts)


def _sub(
    pattern: re.Pattern[str],
    label: str,
    text: str,
    counts: dict[str, int],
    keep: Callable[[re.Match[str]], bool] | None = None,
    keep_label: bool = False,
) -> str:
    placeholder = f"[REDACTED:{label}]"

    def replace(match: re.Match[str]) -> str:
        if keep is not None and not keep(match):
            return match.group()
        counts[label] = counts.get(label, 0) + 1
        if keep_label:  # exactly one alternative matched; its only group is the label
            return next(g for g in match.groups() if g is not None) + placeholder
        return placeholder

    return pattern.sub(replace, text)


def redact(text: str) -> RedactionResult:
    """Replace emails, phone numbers, Luhn-valid card numbers, API keys, JWTs and bearer
    tokens in `text` with `[REDACTED:<CLASS>]` placeholders."""
    counts: dict[str, int] = {}
    out = _sub(_SECRET_TOKENS, SECRET, text, counts)
    out = _sub(_SECRET_VALUES, SECRET, out, counts, keep_label=True)
    if "@" in out:
        out = _sub(_EMAIL, EMAIL, out, counts)
    out = _sub(_CARD, CARD, out, counts, _is_card)
    out = _sub(_PHONE, PHONE, out, counts, _is_phone)
    return RedactionResult(out, counts)
