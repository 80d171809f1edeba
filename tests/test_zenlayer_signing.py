"""ZC2-HMAC-SHA256 signing against the test vectors produced with Zenlayer's own SDK code."""

from __future__ import annotations

import pytest

from bot.zenlayer import signing

VECTORS = [
    (
        "console.zenlayer.com",
        "1764300000",
        b'{"instanceIds": ["ins-1", "ins-2"]}',
        "36f55f80219676fd0012674fdc53cfd959b204b9c324bb69adb3d237ca5f51f9",
    ),
    (
        "127.0.0.1:8089",
        "1764300123",
        b'{"instanceIds": ["instanceId1"]}',
        "9550727368fdc0e503a01ad3edc62ef21953810546348850f541bd576dd8185f",
    ),
]


@pytest.mark.parametrize(("host", "timestamp", "body", "expected"), VECTORS)
def test_sign_reproduces_the_spec_vectors(host: str, timestamp: str, body: bytes, expected: str) -> None:
    assert signing.sign("SECRETEXAMPLE", timestamp, host, body) == expected


@pytest.mark.parametrize(("host", "timestamp", "body", "expected"), VECTORS)
def test_verify_accepts_the_vectors_and_rejects_any_change(
    host: str, timestamp: str, body: bytes, expected: str
) -> None:
    assert signing.verify("SECRETEXAMPLE", timestamp, host, body, expected)
    assert signing.verify("SECRETEXAMPLE", timestamp, host, body, expected.upper())
    assert not signing.verify("SECRETEXAMPL", timestamp, host, body, expected)
    assert not signing.verify("SECRETEXAMPLE", str(int(timestamp) + 1), host, body, expected)
    assert not signing.verify("SECRETEXAMPLE", timestamp, host + ".", body, expected)
    assert not signing.verify("SECRETEXAMPLE", timestamp, host, body + b" ", expected)
    assert not signing.verify("SECRETEXAMPLE", timestamp, host, body, expected, "application/json; charset=utf-8")
    assert not signing.verify("SECRETEXAMPLE", timestamp, host, body, "zz")
    assert not signing.verify("SECRETEXAMPLE", timestamp, host, body, "é" * 64)


def test_canonical_request_layout() -> None:
    text = signing.canonical_request("h:1", b"{}")
    assert text.split("\n") == [
        "POST",
        "/",
        "",
        "content-type:application/json",
        "host:h:1",
        "",
        "content-type;host",
        "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",  # sha256 of b"{}"
    ]


def test_authorization_header_round_trips() -> None:
    value = signing.authorization_header("AKIDEXAMPLE", VECTORS[0][3])
    assert value == (
        "ZC2-HMAC-SHA256 Credential=AKIDEXAMPLE, SignedHeaders=content-type;host, Signature=" + VECTORS[0][3]
    )
    parsed = signing.parse_authorization(value)
    assert parsed == signing.ParsedAuthorization("AKIDEXAMPLE", "content-type;host", VECTORS[0][3])


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Bearer abc",
        "ZC2-HMAC-SHA256 Credential=AK, Signature=abc",
        "ZC2-HMAC-SHA256 Credential=AK, SignedHeaders=content-type;host, Signature=not-hex",
        "HMAC-SHA256 Credential=AK, SignedHeaders=content-type;host, Signature=abc",
    ],
)
def test_parse_authorization_rejects_malformed_headers(value: str) -> None:
    assert signing.parse_authorization(value) is None
