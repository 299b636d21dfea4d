#!/usr/bin/env python3
"""Demo upstream for `make run` and the end-to-end tests (a demo, not product).

Every request gets 200 JSON {"upstream":"demo","method","path","headers","body_sha256"} (or the
status named by an `X-Demo-Status` request header; an `X-Demo-Response-Header: name: value`
request header adds that header to the response, several separated by `||`, so tests can play
an upstream that sets its own),
except GET /health (200 {"status":"ok"}) and POST /auth/login (username/password read from the
body as FastAPI would: JSON, form-urlencoded or multipart/form-data, see `credentials`):
200 with a bearer token for demo / demo-password, else 401 {"detail":"Incorrect username or
password"}. With --record FILE, every request is appended to FILE as one JSON line, so tests
can prove what reached (or never reached) the upstream.
"""
import argparse
import base64
import email.message
import email.parser
import email.policy
import hashlib
import hmac
import json
import os
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEMO_USER, DEMO_PASSWORD = "demo", "demo-password"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(sub, secret):
    """HS256 JWT for `sub`, valid for an hour (the end-to-end tests sign with it too)."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64url(json.dumps({"sub": sub, "exp": int(time.time()) + 3600}).encode())
    sig = b64url(hmac.new(secret.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest())
    return f"{header}.{claims}.{sig}"


def make_token(sub):
    """HS256 JWT signed with JWT_SECRET_KEY, so the filter can verify refresh/bearer tokens."""
    return sign_jwt(sub, os.environ.get("JWT_SECRET_KEY", "demo-jwt-secret"))


def credentials(content_type, body):
    """(username, password) as FastAPI reads a login body, so that the e2e tests can show the
    upstream reading a user from each encoding: JSON for `application/json` and `+json` media
    types (Python's json.loads, which detects UTF-16/32 and a UTF-8 BOM and accepts NaN),
    multipart/form-data, else a form decoded as Starlette does (Latin-1, then unquote_plus)."""
    header = email.message.Message()
    header["content-type"] = content_type or ""
    ctype = header.get_content_type()
    try:
        if ctype == "application/json" or (ctype.startswith("application/")
                                           and ctype.endswith("+json")):
            data = json.loads(body or b"{}")
        elif ctype == "multipart/form-data":
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
            data = {p.get_param("name", header="content-disposition"):
                    p.get_payload(decode=True).decode("utf-8", "replace")
                    for p in msg.iter_parts()}
        else:
            data = dict(urllib.parse.parse_qsl(body.decode("latin-1"), keep_blank_values=True))
        return str(data.get("username", "")), str(data.get("password", ""))
    except (ValueError, AttributeError, TypeError):
        return "", ""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    record_lock = threading.Lock()

    def log_message(self, fmt, *args):  # quiet: the tests read the record file instead
        pass

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _send(self, status, payload, extra=()):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _handle(self):
        body = self._body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        record = {"method": self.command, "path": self.path, "headers": headers,
                  "body_sha256": hashlib.sha256(body).hexdigest(), "body_len": len(body)}
        if self.server.record_file:
            with self.record_lock, open(self.server.record_file, "a") as f:
                f.write(json.dumps(record) + "\n")
        path = urllib.parse.urlsplit(self.path).path
        if path == "/health" and self.command == "GET":
            return self._send(200, {"status": "ok"})
        if path == "/auth/login" and self.command == "POST":
            user, password = credentials(headers.get("content-type"), body)
            if hmac.compare_digest(user.encode(), DEMO_USER.encode()) and \
                    hmac.compare_digest(password.encode(), DEMO_PASSWORD.encode()):
                return self._send(200, {"access_token": make_token(user),
                                        "refresh_token": make_token(user),
                                        "token_type": "bearer"})
            return self._send(401, {"detail": "Incorrect username or password"},
                              [("WWW-Authenticate", "Bearer")])
        # Tests make the upstream fail on purpose (e.g. a webhook provider's retry after a 5xx).
        status = int(headers.get("x-demo-status", "200") or 200)
        extra = []
        for item in headers.get("x-demo-response-header", "").split("||"):
            name, sep, value = item.partition(":")
            if sep:
                extra.append((name.strip(), value.strip()))
        return self._send(status, {"upstream": "demo", "method": self.command,
                                   "path": self.path, "headers": headers,
                                   "body_sha256": record["body_sha256"]}, extra)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--record")
    a = p.parse_args()
    server = ThreadingHTTPServer((a.host, a.port), Handler)
    server.daemon_threads = True
    server.record_file = a.record
    print(f"demo upstream listening on {a.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
