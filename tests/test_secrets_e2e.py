"""Secrets never land in anything the stack writes (the preamble's rule: secrets never in logs,
audit records or error bodies; docs/audit.md §9.2).

One production stack with audit on, the real collector (JSONL + SQLite), the real rate-limit
service and Redis. Unique canary values (passwords, refresh tokens, the JWT and webhook
secrets, webhook signatures, the collector's token, API keys, cookies, card numbers and CVCs)
go through every route: login, refresh, register and reset, webhook deliveries (accepted,
forged, replayed, too large, unconfigured), audited payment / refund / settings / user
requests with card data, and requests each stage refuses. Then everything the stack wrote is
scanned: every file under the test's directory but the demo upstream's own (Envoy's log with
the filter at debug level, the collector's log, its JSONL files and SQLite files byte for
byte, the rate-limit service's and Redis's logs), Redis's keys, and every response the stack
gave that is not the demo upstream's echo of the request. A canary found is named with where
(file, line, and the record's field).

Nothing here is a value the audit design records on purpose (usernames, the JWT `sub`, request
ids, user agents, paths of debug endpoints): only secrets, and card numbers wherever they are
(the Luhn rule redacts them whatever the field)."""
import base64
import json
import os
import random
import subprocess
import uuid

from harness import Collector, request
from test_audit_e2e import FAST, without_marker
from test_ratelimit_e2e import clear_of_boundaries, windows
from test_webhook_e2e import signed

from demo_upstream import sign_jwt

TAG = uuid.uuid4().hex[:10]


def canary(name):
    return f"cnry{name}{TAG}"


def luhn_card(prefix="4"):
    """A random 16-digit card number that passes the Luhn check."""
    digits = [int(d) for d in prefix] + [random.randrange(10) for _ in range(15 - len(prefix))]
    total = 0
    for i, d in enumerate(reversed(digits)):
        d = d * 2 if i % 2 == 0 else d
        total += d - 9 if d > 9 else d
    return "".join(map(str, digits)) + str((10 - total % 10) % 10)


def spaced(card, sep=" "):
    return sep.join(card[i:i + 4] for i in range(0, 16, 4))


# label -> the secret (each label names where the test sends it).
C = {k: canary(k) for k in (
    "jwtsecret", "collectortoken", "githubsecret", "stripesecret", "forgedsecret",
    "loginpw", "jsonloginpw", "overlimitpw", "closedpw", "registerpw", "resetpw", "resettoken",
    "bearer", "cookie", "apikeyheader", "queryaccesstoken", "queryencodedpw", "queryapikey",
    "cvc", "payjsonpw", "nestedapikey", "unicodekeypw", "settingssmtppw", "settingsprivkey",
    "settingsclientsecret", "userpw", "notjsonpw", "toolargepw", "webhookbodypw",
    "debugtoken", "debugpw", "versionapikey", "pathtoken", "overrideurltoken")}
C["jwtsecret"] += "-0123456789abcdef0123456789"  # production wants >= 32 bytes
C["standardkey"] = canary("standardkey")
STANDARD_KEY = base64.b64encode(C["standardkey"].encode().ljust(32, b"k")).decode()
C["standardsecret"] = "whsec_" + STANDARD_KEY
CARDS = {k: luhn_card() for k in (
    "cardnumber", "freetext", "freetextdash", "integer", "query", "header", "pathsegment",
    "jsonkey", "webhookfield")}

REFRESH_TOKEN = sign_jwt(f"carol-{TAG}", C["jwtsecret"])
# The JWT's signature is what makes it a credential: any part of the token's MAC is a leak.
C["refreshtoken"] = REFRESH_TOKEN
C["refreshsig"] = REFRESH_TOKEN.rsplit(".", 1)[1]

PLUGIN = {"max_body_bytes": 8192, "webhook": {"max_body_bytes": 4096},
          "ratelimit": {"timeout_ms": 2000}}
ENV = {"ENVIRONMENT": "production", "JWT_SECRET_KEY": C["jwtsecret"],
       "AUDIT_COLLECTOR_TOKEN": C["collectortoken"], "DISABLED_API_VERSIONS": "v0",
       "WEBHOOK_SECRET_GITHUB": C["githubsecret"], "WEBHOOK_SECRET_STRIPE": C["stripesecret"],
       "WEBHOOK_SECRET_STANDARD": C["standardsecret"]}
# What the upstream's own responses echo (the request), so not the stack's words.
UPSTREAM_ECHO = "demo"


def forms(value):
    """The spellings of a secret to look for: a card number also without its separators."""
    out = {value}
    digits = value.replace(" ", "").replace("-", "")
    if digits.isdigit():
        out.add(digits)
    return out


def all_canaries(signatures):
    out = {f"secret {k}": v for k, v in C.items()}
    out["secret standardkey (base64)"] = STANDARD_KEY
    out.update({f"card {k}": v for k, v in CARDS.items()})
    out.update({f"webhook signature {i}": v for i, v in enumerate(signatures)})
    return out


SENSITIVE_HEADERS = {"authorization": f"Bearer {C['bearer']}",
                     "cookie": f"session={C['cookie']}; theme=dark",
                     "x-api-key": C["apikeyheader"],
                     "x-card-ref": spaced(CARDS["header"])}


def test_no_secret_reaches_a_log_a_record_a_store_or_an_error_body(
        stack_factory, ratelimit_factory, log_dir):
    rl = PLUGIN["ratelimit"]
    svc = ratelimit_factory(rl, name="rls")
    collector = Collector(os.path.join(log_dir, "collector"), token=C["collectortoken"]).start()
    try:
        s = stack_factory(env=ENV, plugin_config=PLUGIN, audit_config=FAST,
                          ratelimit_port=svc.grpc_port, collector_port=collector.port,
                          name="stack")
        # The filter's own logs at debug level too (Envoy's wasm component).
        assert request(s.admin_port, "POST", "/logging?wasm=debug").status == 200
        responses, signatures = exercise_every_route(s, svc)
        recs = without_marker(s, collector)
        assert recs, "no audit record was stored"
        leaks = scan(s, collector, svc, responses, all_canaries(signatures), log_dir)
    finally:
        collector.stop()
    # The scan is not blind: the upstream's own record (left out of the scan: the application
    # is meant to get its secrets) holds the header and query secrets that reached it.
    with open(s.record, "rb") as f:
        upstream = f.read()
    for reached in ("bearer", "cookie", "apikeyheader", "queryaccesstoken"):
        assert C[reached].encode() in upstream, reached
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)


def exercise_every_route(s, svc):
    """Sends each secret through its route; returns [(label, response)] and the webhook
    signatures sent."""
    out = []
    signatures = []

    def send(label, method, path, headers=None, body=None, expect=None):
        r = s.request(method, path, headers=headers, body=body)
        if expect is not None:
            assert r.status in expect, (label, r)
        out.append((label, r))
        return r

    form = {"content-type": "application/x-www-form-urlencoded"}
    js = {"content-type": "application/json"}
    # --- auth routes (rate-limited: 5 logins per IP per 300 s bucket) ------------------------
    clear_of_boundaries(60, windows(300, 600, 3600))
    send("login json", "POST", "/auth/login", js,
         json.dumps({"username": "bob", "password": C["jsonloginpw"]}), {401})
    for _ in range(4):
        send("login form", "POST", "/auth/login", form,
             f"username=alice&password={C['loginpw']}", {401})
    for _ in range(2):
        send("login over the limit", "POST", "/auth/login", form,
             f"username=alice&password={C['overlimitpw']}", {429})
    send("refresh form", "POST", "/auth/refresh", form, f"refresh_token={REFRESH_TOKEN}", {200})
    send("refresh bearer", "POST", "/auth/refresh",
         {**form, "authorization": f"Bearer {REFRESH_TOKEN}"}, "", {200})
    send("refresh json", "POST", "/auth/refresh", js,
         json.dumps({"refresh_token": REFRESH_TOKEN}), {200})
    send("register", "POST", "/auth/register", js,
         json.dumps({"username": "dave", "email": "d@example.com", "password": C["registerpw"]}),
         {200})
    send("password reset", "POST", "/auth/password-reset", js,
         json.dumps({"email": "d@example.com", "token": C["resettoken"],
                     "new_password": C["resetpw"]}), {200})

    # --- webhooks --------------------------------------------------------------------------
    def hook(label, source, body, expect, secret=None, again=False):
        path, headers = signed(s, source, body, secret=secret or C[f"{source}secret"])
        signatures.extend(v for k, v in headers.items()
                          if "signature" in k.lower() or "hmac" in k.lower())
        headers.update(SENSITIVE_HEADERS)
        for attempt in expect:  # `again`: the exact delivery twice (a replay)
            send(label, "POST", path, headers, body, {attempt})
            if not again:
                break

    def hook_body(extra=""):
        return json.dumps({"id": f"evt_{uuid.uuid4().hex}", "password": C["webhookbodypw"],
                           "card": spaced(CARDS["webhookfield"]), "x": extra}).encode()

    for source in ("github", "stripe", "standard"):
        hook(f"webhook {source} accepted, then replayed", source, hook_body(), (200, 401),
             again=True)
        hook(f"webhook {source} forged", source, hook_body(), (401,), secret=C["forgedsecret"])
    hook("webhook too large", "github", hook_body("y" * 5000), (413,))
    # A source without a secret in production: refused, the signature never checked.
    hook("webhook unconfigured", "shopify", hook_body(), (401,), secret=C["forgedsecret"])

    # --- audited operations with card data --------------------------------------------------
    query = (f"?access_token={C['queryaccesstoken']}&pass%77ord={C['queryencodedpw']}"
             f"&API_KEY={C['queryapikey']}&ref={spaced(CARDS['query'], '+')}")
    payment = (
        '{"card_number": "%s", "cvc": "%s", "expiry": "12/30", "password": "%s", '
        '"nested": [[{"api_key": "%s"}]], "note": "paid with %s and %s", "ref": %s, '
        '"pass\\u0077ord": "%s", "cards": {"%s": {"primary": true}}}'
        % (CARDS["cardnumber"], C["cvc"], C["payjsonpw"], C["nestedapikey"],
           spaced(CARDS["freetext"]), spaced(CARDS["freetextdash"], "-"), CARDS["integer"],
           C["unicodekeypw"], CARDS["jsonkey"]))
    json.loads(payment)  # the test's own JSON is valid
    send("payment", "POST", "/api/v1/payments/process" + query, {**js, **SENSITIVE_HEADERS},
         payment, {200})
    send("refund with a card in the path", "POST",
         f"/api/v1/payments/refund/{CARDS['pathsegment']}", js, '{"amount": 5}', {200})
    send("refund not JSON", "POST", "/api/v1/payments/refund", js,
         f"password={C['notjsonpw']}", {200})
    send("refund too large", "POST", "/api/v1/payments/refund", js,
         json.dumps({"password": C["toolargepw"], "pad": "x" * 9000}), {413})
    send("settings", "PUT", "/api/v1/settings", {**js, **SENSITIVE_HEADERS},
         json.dumps({"smtp_password": C["settingssmtppw"], "private_key": C["settingsprivkey"],
                     "oauth": {"client_secret": C["settingsclientsecret"]}}), {200})
    send("user create", "POST", "/api/v1/auth/users", js,
         json.dumps({"username": "erin", "password": C["userpw"]}), {200})

    # --- refused by the other stages ---------------------------------------------------------
    send("path refused", "GET", f"/debug%2Ftoken?token={C['pathtoken']}", SENSITIVE_HEADERS,
         None, {400})
    send("debug blocked", "GET", f"/debug/token?token={C['debugtoken']}&password={C['debugpw']}",
         SENSITIVE_HEADERS, None, {404})
    send("version disabled", "GET", f"/api/v0/orders?api_key={C['versionapikey']}",
         SENSITIVE_HEADERS, None, {410})
    send("override header stripped", "GET", "/api/v2/ping",
         {**SENSITIVE_HEADERS, "x-original-url": f"/debug/token?token={C['overrideurltoken']}"},
         None, {200})
    # The rate-limit service down: production fails closed.
    svc.kill("service_cmd")
    send("login, service down", "POST", "/auth/login", form,
         f"username=frank&password={C['closedpw']}", {503})
    return out, signatures


def scan(s, collector, svc, responses, canaries, log_dir):
    blobs = {}
    upstream = {os.path.abspath(s.record), os.path.join(s.log_dir, "upstream.log")}
    for root, _, files in os.walk(log_dir):
        for name in files:
            path = os.path.join(root, name)
            if os.path.abspath(path) in upstream:
                continue
            with open(path, "rb") as f:
                blobs[os.path.relpath(path, log_dir)] = f.read()
    keys = subprocess.run(["redis-cli", "-p", str(svc.redis_port), "--scan"],
                          capture_output=True, timeout=30)
    assert keys.returncode == 0, keys.stderr
    blobs["Redis keys"] = keys.stdout
    for i, (label, r) in enumerate(responses):
        blobs[f"response {i} ({label}): headers"] = json.dumps(r.headers).encode()
        try:
            echo = r.json().get("upstream") == UPSTREAM_ECHO
        except (ValueError, AttributeError):
            echo = False
        if not echo:
            blobs[f"response {i} ({label}): body"] = r.body
    leaks = []
    for what, value in canaries.items():
        for form in forms(value):
            for where, blob in blobs.items():
                if form.encode() in blob:
                    leaks.append(f"{what} ({form}) in {where}: {locate(blob, form)}")
    return leaks


def locate(blob, form):
    """Where in a blob: for a JSON line, its line number and the record's fields holding it;
    else the text around it."""
    for n, line in enumerate(blob.split(b"\n"), 1):
        if form.encode() not in line:
            continue
        try:
            fields = fields_with(json.loads(line), form)
            return f"line {n}, field(s) {', '.join(fields)}"
        except ValueError:
            i = line.index(form.encode())
            around = line[max(0, i - 100):i + len(form) + 40].decode("latin-1")
            return f"line {n}: ...{''.join(ch if ch.isprintable() else '.' for ch in around)}..."
    return "?"


def fields_with(value, form, path=""):
    if isinstance(value, dict):
        found = [f"{path}.{k}" if form in str(k) else None for k in value]
        found = [f for f in found if f]
        for k, v in value.items():
            found += fields_with(v, form, f"{path}.{k}")
        return found
    if isinstance(value, list):
        return [f for i, v in enumerate(value) for f in fields_with(v, form, f"{path}[{i}]")]
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return fields_with(json.loads(value), form, path)  # a stored line inside a row
        except ValueError:
            pass
    return [path or "(value)"] if form in str(value) else []
