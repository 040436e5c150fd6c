#!/usr/bin/env python3
"""A stand-in GOV.UK Notify API for contactd's tests.

Every request's bearer token is checked with Notify's own client library
(notifications_python_client.authentication.decode_jwt_token, which also checks that
iat is within 30 seconds), and every notification body against Notify's documented
schema for POST /v2/notifications/sms and /email. Faults are scripted by the test.

    notify_standin.py API_KEY TEMPLATES_JSON

prints its port on the first line, then serves until killed.

Test-only control routes (no token): POST /_script  ["500_after_accept", "hang",
"429_minute", "429_daily", "403_clock", "400"] appends faults for the next sends;
POST /_status {"id": ..., "status": ...} changes a notification's status (as
Notify's own processing would, without a callback); GET /_state reports what was
accepted and every refusal.
"""

import json
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from notifications_python_client.authentication import decode_jwt_token, get_token_issuer

API_KEY = sys.argv[1]
SECRET = API_KEY[-36:]
SERVICE_ID = API_KEY[-73:-37]
TEMPLATES = json.loads(sys.argv[2])

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SCHEMAS = {
    "sms": ({"phone_number", "template_id"},
            {"phone_number", "template_id", "personalisation", "reference", "sms_sender_id"}),
    "email": ({"email_address", "template_id"},
              {"email_address", "template_id", "personalisation", "reference",
               "email_reply_to_id", "one_click_unsubscribe_url"}),
}

lock = threading.Lock()
faults = []
accepted = []  # notifications Notify holds
posts = []  # every POST that passed the token check: (reference, outcome)
token_errors = []
schema_errors = []


def error(status, kind, message):
    return status, {"status_code": status, "errors": [{"error": kind, "message": message}]}


def placeholders(text):
    return {m.split("??")[0].strip() for m in re.findall(r"\(\((.*?)\)\)", text or "")}


def check_body(kind, body):
    required, allowed = SCHEMAS[kind]
    if not isinstance(body, dict):
        return "not a JSON object"
    missing = required - body.keys()
    if missing:
        return f"{sorted(missing)} is a required property"
    extra = body.keys() - allowed
    if extra:
        return f"Additional properties are not allowed ({sorted(extra)} were unexpected)"
    for field in ("phone_number", "email_address", "template_id", "reference"):
        if field in body and not isinstance(body[field], str):
            return f"{field} is not a string"
    if not UUID.match(body["template_id"]):
        return "template_id is not a valid UUID"
    if "personalisation" in body:
        p = body["personalisation"]
        if not isinstance(p, dict) or not all(isinstance(v, str) for v in p.values()):
            return "personalisation is not an object of strings"
    if "reference" in body and len(body["reference"]) > 1000:
        return "reference is too long"
    template = TEMPLATES.get(body["template_id"])
    if template is None or template["type"] != kind:
        return "Template not found"
    needed = placeholders(template.get("subject")) | placeholders(template["body"])
    missing = needed - set(body.get("personalisation", {}).keys())
    if missing:
        return f"Missing personalisation: {', '.join(sorted(missing))}"
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def authorised(self):
        header = self.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return "Unauthorized: authentication token must be provided"
        token = header[len("Bearer "):]
        try:
            if get_token_issuer(token) != SERVICE_ID:
                return "Invalid token: service not found"
            decode_jwt_token(token, SECRET)
        except Exception as e:  # every token error of the library
            return f"Invalid token: {type(e).__name__} {e}"
        return None

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/_state":
            with lock:
                return self.answer(200, {"accepted": accepted, "posts": posts,
                                         "token_errors": token_errors,
                                         "schema_errors": schema_errors})
        why = self.authorised()
        if why:
            with lock:
                token_errors.append(why)
            return self.answer(*error(403, "AuthError", why))
        if url.path == "/v2/notifications":
            reference = parse_qs(url.query).get("reference", [None])[0]
            with lock:
                found = [n for n in accepted if reference is None or n["reference"] == reference]
            return self.answer(200, {"notifications": found, "links": {}})
        m = re.match(r"^/v2/notifications/([0-9a-f-]{36})$", url.path)
        if m:
            with lock:
                found = [n for n in accepted if n["id"] == m.group(1)]
            if not found:
                return self.answer(*error(404, "NoResultFound", "No result found"))
            return self.answer(200, found[0])
        m = re.match(r"^/v2/template/([0-9a-f-]{36})$", url.path)
        if m:
            t = TEMPLATES.get(m.group(1))
            if t is None:
                return self.answer(*error(404, "NoResultFound", "No result found"))
            return self.answer(200, {"id": m.group(1), "type": t["type"], "body": t["body"],
                                     "subject": t.get("subject"), "version": 1,
                                     "name": "contactd", "created_at": "2026-01-01T00:00:00.000000Z"})
        self.answer(*error(404, "NotFound", "no such route"))

    def do_POST(self):
        url = urlparse(self.path)
        body = self.read_json()
        if url.path == "/_script":
            with lock:
                faults.extend(body)
            return self.answer(200, {})
        if url.path == "/_status":
            with lock:
                for n in accepted:
                    if n["id"] == body["id"]:
                        n["status"] = body["status"]
            return self.answer(200, {})
        m = re.match(r"^/v2/notifications/(sms|email)$", url.path)
        if not m:
            return self.answer(*error(404, "NotFound", "no such route"))
        why = self.authorised()
        if why:
            with lock:
                token_errors.append(why)
            return self.answer(*error(403, "AuthError", why))
        kind = m.group(1)
        why = check_body(kind, body)
        if why:
            with lock:
                schema_errors.append(why)
            return self.answer(*error(400, "ValidationError" if "Missing" not in why else "BadRequestError", why))
        with lock:
            fault = faults.pop(0) if faults else None
            posts.append({"reference": body.get("reference"), "fault": fault})
        if fault == "429_minute":
            return self.answer(*error(429, "RateLimitError",
                                      "Exceeded rate limit for key type LIVE of 3000 requests per 60 seconds"))
        if fault == "429_daily":
            return self.answer(*error(429, "TooManyRequestsError", "Exceeded send limits (1000) for today"))
        if fault == "403_clock":
            return self.answer(*error(403, "AuthError",
                                      "Error: Your system clock must be accurate to within 30 seconds"))
        if fault == "400":
            return self.answer(*error(400, "BadRequestError", "Can't send to this recipient using a team-only API key"))
        template = TEMPLATES[body["template_id"]]
        text = template["body"]
        for k, v in body.get("personalisation", {}).items():
            text = text.replace(f"(({k}))", v)
        n = {"id": str(uuid.uuid4()), "reference": body.get("reference"), "type": kind,
             "status": "created", "template": {"id": body["template_id"], "version": 1},
             "body": text, "personalisation": body.get("personalisation", {}),
             "phone_number": body.get("phone_number"), "email_address": body.get("email_address")}
        with lock:
            accepted.append(n)
        if fault == "500_after_accept":
            return self.answer(*error(500, "Exception", "Internal server error"))
        if fault == "hang":
            time.sleep(30)
        self.answer(201, {"id": n["id"], "reference": n["reference"],
                          "content": {"body": text}, "uri": f"/v2/notifications/{n['id']}",
                          "template": {"id": body["template_id"], "version": 1,
                                       "uri": f"/v2/template/{body['template_id']}"}})


class Server(ThreadingHTTPServer):
    daemon_threads = True


server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
