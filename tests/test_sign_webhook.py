"""scripts/sign-webhook: an independent signer. Its signatures must equal every valid
reference vector's (same secret, body, URL, time and id), so the tool and the filter agree
with the providers, not only with each other. End-to-end use is in test_webhook_e2e.py."""
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import urllib.parse

import pytest

from harness import ROOT

TOOL = os.path.join(ROOT, "scripts/sign-webhook")


def load_tool():
    loader = importlib.machinery.SourceFileLoader("sign_webhook", TOOL)
    spec = importlib.util.spec_from_loader("sign_webhook", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


sw = load_tool()
VECTORS = json.load(open(os.path.join(
    ROOT, "crates/aura-guard-core/tests/data/webhook_vectors.json")))
SCHEME = {
    "stripe-v1": "stripe", "github-sha256": "github", "github-sha1-legacy": "github-sha1",
    "square-hmacsha256": "square", "square-sha1-legacy": "square-sha1", "twilio-hmacsha1": "twilio",
    "slack-v0": "slack", "standard-webhooks-v1": "standard", "svix-v1": "standard",
    "shopify-hmacsha256": "shopify", "toast-hmacsha256": "toast",
    "clover-hosted-checkout": "clover", "clover-app-auth-code": "clover-app",
}


def header(v, name):
    for k, val in v["headers"].items():
        if k.lower() == name.lower():
            return val
    return None


def body_of(v):
    if v.get("body_repeat"):
        return v["body_repeat"]["char"].encode() * v["body_repeat"]["count"]
    return v["body"].encode()


def timestamp_of(v, scheme):
    if scheme in ("stripe", "clover"):
        sig = header(v, "Stripe-Signature") or header(v, "Clover-Signature")
        return int(dict(p.split("=", 1) for p in sig.split(","))["t"])
    if scheme == "slack":
        return int(header(v, "X-Slack-Request-Timestamp"))
    if scheme == "standard":
        return int(header(v, "webhook-timestamp") or header(v, "svix-timestamp"))
    return 0


def port_variants(url):
    parts = urllib.parse.urlsplit(url)
    default = {"https": 443, "http": 80}[parts.scheme]
    host = parts.hostname
    out = [url]
    for netloc in (host, f"{host}:{default}"):
        out.append(urllib.parse.urlunsplit(parts._replace(netloc=netloc)))
    return out


def signature_values(v, name):
    """All signature values the vector carries under `name` (lists split)."""
    value = header(v, name)
    if name == "X-Shopify-Hmac-Sha256" and value is None:
        value = header(v, "shopify-hmac-sha256")
    if name in ("Stripe-Signature", "Clover-Signature"):
        return {p.split("=", 1)[1] for p in value.split(",") if p.startswith("v1=")}
    if name == "webhook-signature":
        value = header(v, "webhook-signature") or header(v, "svix-signature")
        return set(value.split(" "))
    return {value}


VALID = [v for v in VECTORS if v["expected_valid"]]


@pytest.mark.parametrize("v", VALID, ids=[v["id"] for v in VALID])
def test_tool_reproduces_every_valid_reference_vector(v):
    scheme = SCHEME[v["scheme"]]
    msg_id = header(v, "webhook-id") or header(v, "svix-id")
    urls = [v.get("url")]
    if scheme == "twilio":
        # Twilio's back end signs with or without the port; the filter accepts both forms.
        urls = port_variants(v["url"])
    made = {}
    for url in urls:
        for name, value in sw.sign(scheme, v["secret"], body_of(v), timestamp_of(v, scheme),
                                   url, msg_id):
            made.setdefault(name, set()).add(value)
    for name, values in made.items():
        if name.lower() in ("x-webhook-timestamp", "x-slack-request-timestamp",
                            "webhook-timestamp", "webhook-id"):
            continue
        if name in ("Stripe-Signature", "Clover-Signature"):
            values = {value.split("v1=", 1)[1] for value in values}
        assert values & signature_values(v, name), (name, values, v["headers"])


def test_standard_secret_must_be_base64():
    with pytest.raises(sw.SignError):
        sw.sign("standard", "whsec_!!!", b"{}", 1)


def test_url_schemes_need_the_url():
    for scheme in ("square", "twilio"):
        with pytest.raises(sw.SignError):
            sw.sign(scheme, "k", b"{}", 1)


def test_twilio_json_body_gets_body_sha256_on_both_urls():
    target, headers = sw.prepare("twilio", None, "tok", b'{"a":1}', 1,
                                 url="https://api.example.com/webhooks/twilio",
                                 send="http://127.0.0.1:1/webhooks/twilio")
    assert "bodySHA256=" in target
    assert ("Content-Type", "application/json") in headers


def test_prints_a_curl_command_without_send():
    out = subprocess.run([sys.executable, TOOL, "--source", "github", "--secret", "s",
                          "--body", '{"x":1}'], capture_output=True, text=True, check=True)
    cmd = out.stdout.strip()
    assert cmd.startswith("curl ")
    assert "X-Hub-Signature-256: sha256=" in cmd
    assert cmd.endswith("http://127.0.0.1:8000/webhooks/github")


def test_secret_comes_from_the_environment():
    env = dict(os.environ, WEBHOOK_SECRET_MY_APP="abc")
    out = subprocess.run([sys.executable, TOOL, "--source", "my-app", "--body", "x",
                          "--timestamp", "100"], capture_output=True, text=True, env=env,
                         check=True)
    expected = dict(sw.sign("generic", "abc", b"x", 100))["X-Webhook-Signature"]
    assert expected in out.stdout


def test_missing_secret_is_an_error():
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOK_")}
    out = subprocess.run([sys.executable, TOOL, "--source", "stripe", "--body", "x"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 2
    assert "WEBHOOK_SECRET_STRIPE" in out.stderr
