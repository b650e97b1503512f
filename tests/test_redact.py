"""Redaction: one function takes the key (and any 8-character piece of it) out of every string
that leaves the provider layer — messages, request ids, headers, URLs — scrubbing before any
cut. Driven through ``httpx.MockTransport`` with the error shapes of
``/work/shared/reference/massive-rest-api.md`` ("Errors": ``status``, ``request_id``,
``error`` / ``message``), each echoing the key."""

from __future__ import annotations

import logging

import httpx
import pytest

from enrich import redact as rd
from enrich.errors import (
    EnrichError,
    MalformedPayloadError,
    ProviderError,
    TransientError,
    ValidationError,
)
from enrich.providers.massive.provider import MAX_ERROR_TEXT, MassiveProvider

KEY = "mk_live_7Q2xV9pLr4TzW8cN3bY6hJ1d"  # 32 characters, like a real key
BASE = "https://api.massive.com"


def pieces(secret: str, n: int = rd.MIN_PIECE) -> list[str]:
    return [secret[i:i + n] for i in range(len(secret) - n + 1)]


def leaks(text: str, secret: str = KEY) -> list[str]:
    return [p for p in pieces(secret) if p in text]


def test_whole_key_and_every_long_piece_are_masked():
    assert rd.redact(f"a {KEY} b", [KEY]) == "a *** b"
    head, tail = KEY[:12], KEY[-9:]
    out = rd.redact(f"cut here: {head}| and {tail}.", [KEY])
    assert out == "cut here: ***| and ***."
    # Shorter pieces are ordinary text; overlapping and adjacent pieces mask as one run.
    assert rd.redact(KEY[:7], [KEY]) == KEY[:7]
    assert rd.redact(KEY[:10] + KEY[5:20], [KEY]) == "***"
    assert rd.redact("nothing here", [KEY]) == "nothing here"


def test_a_short_secret_is_masked_whole_only():
    assert rd.redact("pw=hunter2!", ["hunter2"]) == "pw=***!"


def test_errors_never_carry_a_registered_secret():
    rd.register(KEY)
    e = ProviderError(f"boom {KEY}", provider="massive", endpoint="/x",
                      request_id=f"req-{KEY[3:15]}")
    assert not leaks(str(e)) and not leaks(e.message) and not leaks(e.request_id)
    v = ValidationError(f"bad {KEY}", causes=[f"row 1: {KEY[:9]}"])
    assert not leaks(str(v)) and not any(leaks(c) for c in v.causes)
    assert not leaks(str(EnrichError("plain", KEY)))


def _provider(handler) -> MassiveProvider:
    return MassiveProvider(httpx.Client(transport=httpx.MockTransport(handler)), KEY, BASE)


# (status, JSON body or raw bytes, headers): every field the API has echoing the key.
ECHOES = {
    "error field": (500, {"status": "ERROR", "request_id": "r1", "error": f"bad key {KEY}"},
                    {}),
    "message field": (404, {"status": "NOT_FOUND", "request_id": "r2",
                            "message": f"unknown key {KEY}"}, {}),
    "request_id in the body": (401, {"status": "ERROR", "request_id": KEY,
                                     "error": "Unknown API Key"}, {}),
    "X-Request-Id header": (429, {"status": "ERROR", "error": "slow down"},
                            {"X-Request-Id": f"{KEY}-7"}),
    "key straddling the cut": (503, {"status": "ERROR", "request_id": "r3",
                                     "error": "x" * (MAX_ERROR_TEXT - 10) + KEY}, {}),
    "HTML body": (502, f"<html><body>upstream said {KEY}</body></html>".encode(),
                  {"Content-Type": f"text/html; key={KEY}"}),
    "HTML body on 200": (200, f"<html>{KEY}</html>".encode(),
                         {"Content-Type": f"text/html; {KEY}", "X-Request-Id": KEY}),
}


@pytest.mark.parametrize("case", list(ECHOES))
def test_no_error_from_a_key_echoing_server_carries_the_key(case):
    status, body, headers = ECHOES[case]

    def handler(request: httpx.Request) -> httpx.Response:
        assert KEY not in str(request.url)
        if isinstance(body, bytes):
            return httpx.Response(status, content=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    with pytest.raises(ProviderError) as ei:
        _provider(handler).splits("AAPL", *_window())
    exc = ei.value
    for text in (str(exc), exc.message, exc.request_id or "", repr(exc.args)):
        assert not leaks(text), (case, text)
    if case == "key straddling the cut":
        assert "***" in exc.message and len(exc.message) < MAX_ERROR_TEXT + 120


def test_a_next_url_echoing_the_key_is_neither_requested_with_it_nor_shown():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if "cursor" not in request.url.params:
            return httpx.Response(200, json={
                "status": "OK", "request_id": "r", "results": [],
                "next_url": f"{BASE}/stocks/v1/splits?cursor=c1&apiKey={KEY}"})
        return httpx.Response(200, json={
            "status": "OK", "request_id": "r", "results": [],
            "next_url": f"https://{KEY.lower()}.evil.example/p?apiKey={KEY}"})

    with pytest.raises(MalformedPayloadError) as ei:
        _provider(handler).splits("AAPL", *_window())
    assert not any(KEY in u for u in seen)  # apiKey is dropped from a cursor URL
    assert len(seen) == 2  # never the other host
    assert not leaks(str(ei.value), KEY.lower())


def test_a_connection_error_quoting_the_key_is_scrubbed():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {KEY}@host", request=request)

    with pytest.raises(TransientError) as ei:
        _provider(handler).splits("AAPL", *_window())
    assert not leaks(str(ei.value))


def test_log_records_are_redacted_by_the_filter():
    rd.register(KEY)
    logger = logging.getLogger("test.redact")
    handler = logging.StreamHandler()
    handler.addFilter(rd.RedactingFilter())
    record = logger.makeRecord("test.redact", logging.WARNING, __file__, 1,
                               "url %s", (f"https://h/?apiKey={KEY}",), None)
    handler.filter(record)
    assert record.getMessage() == "url https://h/?apiKey=***"


def _window():
    import datetime as dt

    return dt.date(2026, 1, 1), dt.date(2026, 2, 1)
