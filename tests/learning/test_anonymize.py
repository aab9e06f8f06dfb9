"""Anonymisation of training text: the listed patterns go, the routing signal stays."""

from __future__ import annotations

import pytest

from connector.learning.anonymize import (
    CARD,
    EMAIL,
    IBAN,
    PHONE,
    URL,
    Anonymizer,
    anonymize,
    iban_valid,
    luhn_valid,
)


@pytest.mark.parametrize(
    ("text", "secret", "placeholder"),
    [
        # English
        ("Hi, my printer is broken, please mail me at john.smith@example.com thanks", "john.smith@example.com", EMAIL),
        ("Call me back on +44 20 7946 0958 about the VPN", "+44 20 7946 0958", PHONE),
        ("Reach me on (555) 123-4567 for the laptop", "(555) 123-4567", PHONE),
        ("Refund to card 4111 1111 1111 1111 please", "4111 1111 1111 1111", CARD),
        ("Card 5500-0000-0000-0004 was charged twice", "5500-0000-0000-0004", CARD),
        ("Reset link https://sso.example.com/reset?token=abc123def456 does not work", "token=abc123def456", URL),
        ("Salary goes to GB82 WEST 1234 5698 7654 32 from now on", "GB82 WEST 1234 5698 7654 32", IBAN),
        # German
        ("Mein Drucker druckt nicht. Bitte rufen Sie mich unter 030 12345678 an.", "030 12345678", PHONE),
        ("Tel.: 0171/1234567, Passwort abgelaufen", "0171/1234567", PHONE),
        ("Bitte die Rechnung auf IBAN DE89 3704 0044 0532 0130 00 überweisen", "DE89 3704 0044 0532 0130 00", IBAN),
        ("Anmeldung geht nicht, Kontakt: max.mueller@firma.de", "max.mueller@firma.de", EMAIL),
        ("Hier der Link: https://portal.firma.de/login#access_token=eyJhbGciOiJIUzI1NiJ9", "eyJhbGciOiJIUzI1NiJ9", URL),
        ("Handy +49 (0) 151 2345 6789 – VPN kaputt", "151 2345 6789", PHONE),
        # French
        ("Mon imprimante ne marche pas, appelez-moi au 01 23 45 67 89 svp", "01 23 45 67 89", PHONE),
        ("Tél : +33 6 12 34 56 78, mot de passe oublié", "+33 6 12 34 56 78", PHONE),
        ("Virement sur FR76 3000 6000 0112 3456 7890 189 pour la facture", "FR76 3000 6000 0112 3456 7890 189", IBAN),
        ("Écrivez à marie.dupont@société.fr pour le congé", "marie.dupont@société.fr", EMAIL),
        ("Le lien https://intranet.exemple.fr/api/v1/files/9f8e7d6c5b4a39281716a5b4c3d2e1f0 expire", "9f8e7d6c5b4a", URL),
        ("Paiement refusé avec la carte 3782 822463 10005", "3782 822463 10005", CARD),
    ],
)
def test_pattern_is_replaced(text: str, secret: str, placeholder: str) -> None:
    out = anonymize(text)
    assert secret not in out
    assert placeholder in out


@pytest.mark.parametrize(
    "text",
    [
        "Printer on floor 3 broken since 2024-05-14, error 0x80070005",
        "Drucker seit dem 14.05.2024 um 09:30 defekt, Version 2.3.1",
        "L'imprimante du 3e étage est en panne depuis le 14/05/2024",
        "See https://intranet.example.com/wiki/printers for the guide",
        "Ticket #123456 and order 4711 still open, budget 25000 EUR",
        "Room B-204, asset tag 00123",
    ],
)
def test_harmless_text_is_kept(text: str) -> None:
    assert anonymize(text) == text


def test_counts_and_several_patterns_in_one_text() -> None:
    text = (
        "From bob@example.org: please call +1 415 555 0100 or 0049 89 1234567; "
        "card 4012888888881881; https://x.example.com/a?sig=1&exp=2"
    )
    result = Anonymizer().anonymize(text)
    assert result.counts == {EMAIL: 1, PHONE: 2, CARD: 1, URL: 1}
    for secret in ("bob@example.org", "415 555 0100", "89 1234567", "4012888888881881", "sig=1"):
        assert secret not in result.text


def test_luhn_and_iban_checks() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert iban_valid("DE89 3704 0044 0532 0130 00")
    assert not iban_valid("DE88 3704 0044 0532 0130 00")
    # a 16-digit number that fails the Luhn check (e.g. an order number) is kept
    assert anonymize("order 1234 5678 9012 3456 shipped") == "order 1234 5678 9012 3456 shipped"


def test_deterministic_and_idempotent() -> None:
    text = "mail a@b.de, tel 030 1234567"
    once = anonymize(text)
    assert once == anonymize(text)
    assert anonymize(once) == once
