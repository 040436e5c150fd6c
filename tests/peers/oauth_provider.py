"""An OAuth 2.0 provider for the XOAUTH2 tests, as Microsoft's and Google's behave
where it matters here:

- POST /token, grant_type=refresh_token (RFC 6749 section 6): a refresh token is good
  once; the answer carries a new access token and a new (rotated) refresh token. A
  token not current, or a grant revoked, is refused 400 {"error": "invalid_grant"}.
- POST /introspect (RFC 7662), for Dovecot's oauth2 passdb: {"active": true,
  "username": ...} for a current access token.
- POST /admin/expire: every access token issued so far stops being active (an expiry
  or a revocation the client has not heard of).
- POST /admin/revoke: the grant is revoked; no refresh token works any more.
- GET /admin/stats: how many refreshes were granted.

Usage: oauth_provider.py CLIENT_ID CLIENT_SECRET USER FIRST_REFRESH_TOKEN
Prints the port it listens on (127.0.0.1, chosen by the kernel), then serves.
"""

import json
import secrets
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

CLIENT_ID, CLIENT_SECRET, USER, FIRST = sys.argv[1:5]

lock = threading.Lock()
refresh_tokens = {FIRST}
access_tokens = set()
revoked = False
refreshes = 0


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def form(self):
        length = int(self.headers.get("Content-Length", "0"))
        fields = parse_qs(self.rfile.read(length).decode())
        return {k: v[0] for k, v in fields.items()}

    def do_GET(self):
        if self.path == "/admin/stats":
            with lock:
                return self.answer(200, {"refreshes": refreshes})
        self.answer(404, {"error": "not_found"})

    def do_POST(self):
        global revoked, refreshes
        if self.path == "/token":
            form = self.form()
            if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
                return self.answer(401, {"error": "invalid_client"})
            if form.get("grant_type") != "refresh_token":
                return self.answer(400, {"error": "unsupported_grant_type"})
            with lock:
                token = form.get("refresh_token")
                if revoked or token not in refresh_tokens:
                    return self.answer(400, {
                        "error": "invalid_grant",
                        "error_description": "The refresh token has expired or was revoked.",
                    })
                refresh_tokens.discard(token)
                new_refresh = "R-" + secrets.token_urlsafe(16)
                refresh_tokens.add(new_refresh)
                access = "A-" + secrets.token_urlsafe(16)
                access_tokens.add(access)
                refreshes += 1
            return self.answer(200, {
                "token_type": "Bearer",
                "access_token": access,
                "expires_in": 3599,
                "refresh_token": new_refresh,
            })
        if self.path == "/introspect":
            form = self.form()
            with lock:
                if form.get("token") in access_tokens:
                    return self.answer(200, {"active": True, "username": USER})
            return self.answer(200, {"active": False})
        if self.path == "/admin/expire":
            with lock:
                access_tokens.clear()
            return self.answer(200, {})
        if self.path == "/admin/revoke":
            with lock:
                revoked = True
                access_tokens.clear()
            return self.answer(200, {})
        self.answer(404, {"error": "not_found"})


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
