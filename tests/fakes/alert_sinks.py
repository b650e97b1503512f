"""Loopback receivers for alerts: a JSON webhook (apprise ``json://``) and an SMTP server
(aiosmtpd, apprise ``mailto://``). Both bind port 0 and record what they receive; the tests
wait on them with conditions, never on wall-clock sleeps.
"""

from __future__ import annotations

import email
import http.server
import json
import threading
import time
from email.message import Message

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class _Sink:
    def __init__(self) -> None:
        self.items: list = []
        self._cond = threading.Condition()

    def add(self, item) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float = 60.0) -> list:
        """Wait until at least ``n`` items arrived; returns them (fails on timeout)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.items) < n:
                left = deadline - time.monotonic()
                assert left > 0, f"expected {n} item(s), got {len(self.items)}: {self.items}"
                self._cond.wait(left)
            return list(self.items)


class Webhook(_Sink):
    """An HTTP server taking JSON POSTs; answers ``status`` (set it to 500 to refuse)."""

    def __init__(self, status: int = 200):
        super().__init__()
        self.status = status
        self.attempts = 0
        self.auth: list[str | None] = []
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                code = sink.status
                # Recorded before the answer: a sender that has its 200 (and a test that
                # waited for the sender) finds the item here, never a moment later. Under the
                # lock: each request is answered on its own thread.
                with sink._cond:
                    sink.attempts += 1
                    sink.auth.append(self.headers.get("Authorization"))
                if code < 300:
                    sink.add(json.loads(body))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="webhook-sink")
        self.thread.start()

    def url(self, credentials: str = "") -> str:
        auth = f"{credentials}@" if credentials else ""
        return f"json://{auth}127.0.0.1:{self.port}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class _PortZeroController(Controller):
    """aiosmtpd's Controller on port 0: learn the port before it connects to itself."""

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class Smtp(_Sink):
    """An SMTP server accepting any login (without TLS); keeps the messages and logins."""

    def __init__(self):
        super().__init__()
        self.logins: list[tuple[bytes, bytes]] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802
                sink.add(email.message_from_bytes(envelope.content))
                return "250 OK"

        def authenticate(server, session, envelope, mechanism, auth_data):
            sink.logins.append((auth_data.login, auth_data.password))
            return AuthResult(success=True)

        self.controller = _PortZeroController(Handler(), hostname="127.0.0.1", port=0,
                                              authenticator=authenticate,
                                              auth_require_tls=False)
        self.controller.start()
        self.port = self.controller.port

    def url(self, user: str = "desk", password: str = "s3cret-Mail-PW") -> str:
        return (f"mailto://{user}:{password}@127.0.0.1:{self.port}"
                "?from=desk@example.com&to=ops@example.com&mode=insecure")

    @staticmethod
    def text(msg: Message) -> str:
        parts = [msg] if not msg.is_multipart() else [p for p in msg.walk()
                                                      if p.get_content_type() == "text/plain"]
        return "\n".join(p.get_payload(decode=True).decode() for p in parts)

    def close(self) -> None:
        self.controller.stop()
