"""Ticket text cleaning, shared by routing, training and the API.

``ticket_text(subject, body)`` is *the* function that turns a ticket into the
model's input: HTML to text, quoted replies and signatures stripped,
whitespace folded, length bounded.  Training data goes through the same
function so that the model sees at serving time what it saw in training.
"""

from __future__ import annotations

import re
import warnings

from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning

#: characters kept of one ticket; far more than any model reads, bounds the work on huge bodies
MAX_CHARS = 20_000

_HTML_HINT = re.compile(r"<\s*(html|body|div|p|br|table|span|blockquote|b|i|a|ul|li|font)\b", re.IGNORECASE)

# A line that opens a quoted earlier message; everything from it on is dropped.
_REPLY_HEADERS = [
    re.compile(r"^-{2,}\s*(original message|ursprüngliche nachricht|message d'origine|forwarded message)\s*-{2,}", re.I),
    re.compile(r"^(on|am|le)\s.{0,200}\s(wrote|schrieb|a écrit)\s*:\s*$", re.I),
    re.compile(r"^(from|von|de)\s*:\s.+$", re.I),
]
# A line that opens a signature; everything from it on is dropped.
_SIGNATURE = re.compile(
    r"^(--\s*|—\s*|sent from my \w+.*|(best|kind|warm)\s+regards,?|mit freundlichen grüßen,?|viele grüße,?"
    r"|cordialement,?|bien à vous,?|regards,?|thanks and regards,?)$",
    re.I,
)
_WS = re.compile(r"[ \t\f\v\u00a0]+")
_BLANKS = re.compile(r"\n{2,}")


def looks_like_html(text: str) -> bool:
    return bool(_HTML_HINT.search(text[:5000]))


def html_to_text(html: str) -> str:
    """Visible text of an HTML fragment or document, with block elements on their own lines."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "head", "title"]):
        tag.decompose()
    for quote in soup.find_all("blockquote"):
        quote.decompose()
    return soup.get_text("\n")


def strip_quotes_and_signature(text: str) -> str:
    """Drop quoted replies (``>`` lines, "On … wrote:" and everything after) and signatures."""
    kept: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(">"):
            continue
        if kept and (any(p.match(stripped) for p in _REPLY_HEADERS) or _SIGNATURE.match(stripped)):
            break
        kept.append(line)
    return "\n".join(kept)


def to_str(value: str | bytes | None) -> str:
    """Text from str or bytes; invalid UTF-8 is decoded with replacement, never an error."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (surrogateescape'd bytes, "\\udcff" in JSON)
        return value.encode("utf-8", errors="replace").decode("utf-8")
    return value


def clean_body(body: str | bytes | None, *, is_html: bool | None = None) -> str:
    text = to_str(body)[: MAX_CHARS * 5]
    if is_html or (is_html is None and looks_like_html(text)):
        text = html_to_text(text)
    text = strip_quotes_and_signature(text)
    return fold_whitespace(text)


def fold_whitespace(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = _WS.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    text = _BLANKS.sub("\n", text).strip()
    return " ".join(text.split("\n"))


def ticket_text(subject: str | bytes | None, body: str | bytes | None, *, is_html: bool | None = None) -> str:
    """The model input for a ticket: cleaned subject and body, joined, bounded in length."""
    subject_text = fold_whitespace(to_str(subject))
    body_text = clean_body(body, is_html=is_html)
    if subject_text and body_text.startswith(subject_text):
        combined = body_text
    else:
        combined = f"{subject_text}. {body_text}" if subject_text and body_text else subject_text or body_text
    return combined[:MAX_CHARS]
