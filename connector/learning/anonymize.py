"""Anonymisation of training text before it touches the store.

Replaces, in this order, with fixed placeholders:

* URLs that carry secrets (a query string, a fragment, ``user:password@``, or a
  token-like path segment) -> ``[URL]`` (plain URLs such as
  ``https://intranet/wiki/printers`` carry routing signal and are kept);
* e-mail addresses -> ``[EMAIL]``;
* IBANs (structure and ISO 7064 mod-97 check) -> ``[IBAN]``;
* card-like numbers (13–19 digits, optionally grouped, Luhn-valid) -> ``[CARD]``;
* phone numbers (international ``+``/``00`` prefixes, national ``0`` prefixes,
  ``(030)`` area codes, or any digit run after a word like *Tel*, *Telefon*,
  *Tél*, *Mobile*, *Handy*, *Portable*) -> ``[PHONE]``.

Dates, times, versions and short ticket numbers are left alone.  The
functions are pure and deterministic, so the same text always anonymises the
same way (exports stay idempotent).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

EMAIL = "[EMAIL]"
PHONE = "[PHONE]"
IBAN = "[IBAN]"
CARD = "[CARD]"
URL = "[URL]"

_URL_RE = re.compile(r"\b(?:https?|ftp)://[^\s<>\"'\])]+", re.IGNORECASE)
_WWW_RE = re.compile(r"(?<![\w/@.])www\.[^\s<>\"'\])]+", re.IGNORECASE)
_EMAIL_RE = re.compile(r"(?<![\w.+-])[\w.+%-]+@(?:[\w-]+\.)+[^\W\d_]{2,}\b", re.UNICODE)
# country code, check digits, then 11..30 letters/digits, optionally in groups separated by single spaces
_IBAN_RE = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b")
_CARD_RE = re.compile(r"(?<![\w+])\d(?:[ -]?\d){12,18}(?![\w])")
# a phone number starts with +, 00, ( or 0 and has 7..15 digits with optional separators
_PHONE_RE = re.compile(
    r"(?<![\w+/])(?:\+|00|\(0?|0)\d[\d()\s./-]{5,22}\d(?![\w])",
)
# after such a word, any run of at least 6 digits with separators is a phone number
_PHONE_KEYWORD_RE = re.compile(
    r"(?P<kw>\b(?:tel|tél|tele(?:fon|phone)|téléphone|phone|mobile?|mob|handy|mobil|portable|fax|cell|gsm|"
    r"rufnummer|numéro|nummer|whatsapp)\b\.?\s*(?:[:.]|no\.?|nr\.?|n°)?\s*)"
    r"(?P<num>\+?[\d()][\d()\s./-]{4,22}\d)",
    re.IGNORECASE,
)
_DATE_RE = re.compile(
    r"^(?:\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{4}[./-]\d{1,2}[./-]\d{1,2})(?:\s+\d{1,2}[:.]\d{2})?$"
)
_SECRET_WORDS = re.compile(
    r"(token|secret|key|sig|signature|auth|password|passwd|pwd|session|sid|code|access|ticket|otp|hash|jwt|reset)",
    re.IGNORECASE,
)
_TOKENISH = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_\-=.~%]{16,}$|^[A-Fa-f0-9]{24,}$")
_TRAILING_PUNCT = ".,;:!?)"


@dataclass
class AnonymizeResult:
    text: str
    #: replacements made, per placeholder
    counts: dict[str, int] = field(default_factory=dict)


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn check (payment card numbers)."""
    if not digits.isdigit():
        return False
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """ISO 13616 check: move the first four characters to the end, letters to numbers, mod 97 == 1."""
    value = candidate.replace(" ", "").upper()
    if not (15 <= len(value) <= 34) or not value[:2].isalpha() or not value[2:4].isdigit():
        return False
    rearranged = value[4:] + value[:4]
    try:
        number = "".join(str(int(ch, 36)) for ch in rearranged)
    except ValueError:
        return False
    return int(number) % 97 == 1


def _url_has_secret(url: str) -> bool:
    try:
        parts = urlsplit(url if "://" in url else "http://" + url)
    except ValueError:
        return True
    if parts.query or parts.fragment or "@" in parts.netloc:
        return True
    for segment in parts.path.split("/"):
        if _TOKENISH.match(segment) or (_SECRET_WORDS.search(segment) and any(c.isdigit() for c in segment)):
            return True
    return False


def _split_trailing(match_text: str) -> tuple[str, str]:
    stripped = match_text.rstrip(_TRAILING_PUNCT)
    return stripped, match_text[len(stripped):]


#: a rule: the replacement for one match, and the kind it replaced (None: the match is kept)
Rule = Callable[[re.Match[str]], tuple[str, str | None]]


def _url_rule(match: re.Match[str]) -> tuple[str, str | None]:
    url, tail = _split_trailing(match.group(0))
    if _url_has_secret(url):
        return URL + tail, URL
    return match.group(0), None


def _email_rule(match: re.Match[str]) -> tuple[str, str | None]:
    return EMAIL, EMAIL


def _iban_rule(match: re.Match[str]) -> tuple[str, str | None]:
    value = match.group(0)
    # the regex may swallow a following word; shrink until the check passes
    while value:
        if iban_valid(value):
            return IBAN + match.group(0)[len(value):], IBAN
        if " " not in value:
            break
        value = value.rsplit(" ", 1)[0]
    return match.group(0), None


def _card_rule(match: re.Match[str]) -> tuple[str, str | None]:
    digits = re.sub(r"[ -]", "", match.group(0))
    if 13 <= len(digits) <= 19 and luhn_valid(digits):
        return CARD, CARD
    return match.group(0), None


def _phone_keyword_rule(match: re.Match[str]) -> tuple[str, str | None]:
    number = match.group("num").rstrip(" ./-(")
    digits = re.sub(r"\D", "", number)
    if len(digits) < 6 or _DATE_RE.match(number.strip()):
        return match.group(0), None
    return match.group("kw") + PHONE + match.group("num")[len(number):], PHONE


def _phone_rule(match: re.Match[str]) -> tuple[str, str | None]:
    number = match.group(0)
    digits = re.sub(r"\D", "", number)
    if not 7 <= len(digits) <= 15:
        return number, None
    if _DATE_RE.match(number.strip()) or number.count("(") != number.count(")"):
        return number, None
    return PHONE, PHONE


#: applied in this order, each to the output of the one before
_RULES: tuple[tuple[re.Pattern[str], Rule], ...] = (
    (_URL_RE, _url_rule),
    (_WWW_RE, _url_rule),
    (_EMAIL_RE, _email_rule),
    (_IBAN_RE, _iban_rule),
    (_CARD_RE, _card_rule),
    (_PHONE_KEYWORD_RE, _phone_keyword_rule),
    (_PHONE_RE, _phone_rule),
)


class Anonymizer:
    """Replace personal data and secrets in free text; see the module docstring."""

    def __call__(self, text: str) -> str:
        return self.anonymize(text).text

    def anonymize(self, text: str) -> AnonymizeResult:
        counts: dict[str, int] = {}

        def counted(rule: Rule) -> Callable[[re.Match[str]], str]:
            def sub(match: re.Match[str]) -> str:
                replacement, kind = rule(match)
                if kind is not None:
                    counts[kind] = counts.get(kind, 0) + 1
                return replacement

            return sub

        out = text
        for pattern, rule in _RULES:
            out = pattern.sub(counted(rule), out)
        return AnonymizeResult(out, counts)


_DEFAULT = Anonymizer()


def anonymize(text: str) -> str:
    """``text`` with e-mail addresses, phone numbers, IBAN/card numbers and secret URLs replaced."""
    return _DEFAULT(text)
