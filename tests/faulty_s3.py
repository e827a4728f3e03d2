"""An HTTP proxy in front of the S3 server that injects S3's failures on purpose.

Real HTTP on 127.0.0.1: boto3 talks to the proxy as it would to S3. A chosen share of requests
(of ``methods``, whose path contains ``paths``) is answered with 503 SlowDown, 500 InternalError
or 403 AccessDenied (S3's XML error bodies) or has its connection dropped, before
(``when="before"``) or after (``"after"``: the write happened, the answer is lost) forwarding
to the real server. ``hold()`` makes requests wait in the proxy, their bodies read, until
``release()``: a client killed meanwhile leaves them behind, and they reach the server late, as
the uploads of a zombie would.

With ``streak=n``, a request for an object that gets a fault is followed by ``n - 1`` more faults
for the same method and key: above botocore's 5 attempts, only eventvault's own retries get past
it, and ``outlasted`` counts the streaks a client got past (each one at least one retry of its
own). Listings (a GET of the bucket, counted as "LIST") get streaks of ``list_streak`` (1: single
faults), one per page, as each page has its own query. ``rates`` overrides ``rate`` for some
methods. A streak bounds the attempts a request needs, so a test sized for them cannot fail by
chance: a fault at random with no streak can come ten times in a row.

Permissions, as S3 enforces them: ``deny_missing_heads`` answers a HEAD of a missing key with 403
(what S3 answers a role without ``s3:ListBucket``), ``deny`` answers the methods it names with
403 AccessDenied (a role without the permission).
"""

from __future__ import annotations

import hashlib
import http.client
import random
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

_ERRORS = {
    403: b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
    503: b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
    500: b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message>"
         b"</Error>",
}


class FaultyS3:
    """Start with ``start()``; ``endpoint_url`` is the proxy; ``injected`` counts the faults."""

    def __init__(self, upstream: str, rate: float, methods: tuple[str, ...] = ("PUT", "POST"),
                 seed: int = 7,
                 faults: tuple[str, ...] = ("503", "500", "reset-before", "reset-after"),
                 paths: str = "", deny_missing_heads: bool = False, deny: tuple[str, ...] = (),
                 streak: int = 1, rates: dict[str, float] | None = None,
                 list_streak: int = 1) -> None:
        self.upstream = urlsplit(upstream)
        self.deny_missing_heads = deny_missing_heads
        self.deny = deny
        self.rate = rate
        self.faults = faults
        self.methods = methods
        self.paths = paths
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.injected: Counter[str] = Counter()
        self.by_method: Counter[str] = Counter()  # faults injected, by HTTP method
        self.streak = streak
        self.list_streak = list_streak
        self.rates = rates or {}
        self.streaks: dict[tuple[str, str], tuple[str, int]] = {}  # (method, path): fault, left
        self.outlasted = 0
        self.released = threading.Event()
        self.released.set()
        self.held = 0
        self.held_paths: list[str] = []  # paths (bucket/key) of the requests held, in order
        self.answers: Counter[int] = Counter()  # statuses of requests that were held
        self.opaque_etags = False  # answer etags that are not the MD5 of the data (SSE-KMS)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                held = self.command in proxy.methods and not proxy.released.is_set()
                if held:
                    with proxy.lock:
                        proxy.held += 1
                        proxy.held_paths.append(unquote(urlsplit(self.path).path))
                    proxy.released.wait()
                fault = (proxy._pick(self.command, urlsplit(self.path).path)
                         if proxy.paths in self.path else None)
                if self.command in proxy.deny:
                    fault = proxy._count("403")
                if fault in ("503", "500", "403"):
                    data = _ERRORS[int(fault)]
                    self.send_response(int(fault))
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if fault == "reset-before":
                    self._reset()
                    return
                status, headers, data = proxy._forward(self.command, self.path, self.headers,
                                                       body)
                if status == 404 and self.command == "HEAD" and proxy.deny_missing_heads:
                    status, headers = 403, [("Content-Length", "0")]
                    proxy._count("403-head")
                if held:
                    with proxy.lock:
                        proxy.answers[status] += 1
                if fault == "reset-after":
                    self._reset()
                    return
                self.send_response(status)
                length = str(len(data))
                for k, v in headers:
                    if k.lower() == "content-length" and self.command == "HEAD":
                        length = v  # a HEAD answer has no body but tells the object's size
                    elif k.lower() == "etag" and proxy.opaque_etags:
                        self.send_header(k, '"' + hashlib.md5(v.encode()).hexdigest() + '"')
                    elif k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", length)
                self.end_headers()
                self.wfile.write(data)

            def _reset(self) -> None:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self.close_connection = True
                self.connection.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _pick(self, method: str, path: str) -> str | None:
        listing = method == "GET" and path.strip("/").count("/") == 0
        with self.lock:
            if (method, path) in self.streaks:
                fault, left = self.streaks.pop((method, path))
                if not left:
                    self.outlasted += 1  # the client retried past the whole streak
                    return None
                self.streaks[(method, path)] = (fault, left - 1)
            elif (method not in self.methods
                  or self.rng.random() >= self.rates.get("LIST" if listing else method,
                                                         self.rate)):
                return None
            else:
                fault = self.rng.choice(self.faults)
                streak = self.list_streak if listing else self.streak
                if streak > 1:
                    self.streaks[(method, path)] = (fault, streak - 1)
            self.injected[fault] += 1
            self.by_method["LIST" if listing else method] += 1
            return fault

    def _count(self, fault: str) -> str:
        with self.lock:
            self.injected[fault] += 1
        return fault

    def _forward(self, method: str, path: str, headers: object,
                 body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream.hostname or "127.0.0.1", self.upstream.port,
                                          timeout=60)
        try:
            conn.request(method, path, body=body, headers=dict(headers.items()))  # type: ignore[attr-defined]
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def hold(self) -> None:
        """Keep requests of ``methods`` in the proxy until :meth:`release`."""
        self.released.clear()

    def release(self) -> None:
        """Forward the requests held so far, and hold no more."""
        self.released.set()

    def start(self) -> FaultyS3:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
