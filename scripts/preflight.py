#!/usr/bin/env python3
"""Preflight: checks a deployment against the original's security checklist before it takes
traffic (docs/operations.md#preflight). Prints one row per check, the fix under each failure,
and exits 1 when any check fails (2 on a usage error).

Inputs: the environment variables the stack reads (this process's environment, optionally
overlaid with --env-file), the rendered Envoy configuration (--envoy-config: admin address,
the rate-limit and collector clusters, and the plugin configuration inside it) and, when it is
kept apart, the plugin configuration (--plugin-config). Standard library plus PyYAML (read the
Envoy config) and h2 (the rate-limit service's gRPC health check), both in the project's .venv.
"""
import argparse
import http.client
import json
import math
import os
import socket
import ssl
import stat
import sys
import urllib.parse
from collections import Counter

# The filter's own JWT rule (crates/aura-guard-core/src/config/mod.rs, `weak_jwt_secret`):
# the same thresholds and lists, so the preflight refuses exactly what production refuses.
MIN_JWT_SECRET_BYTES = 32
DEMO_JWT_SECRETS = ("demo-jwt-secret", "change-me-to-a-long-random-secret",
                    "your-256-bit-secret", "your-secret-key", "your-jwt-secret", "secret",
                    "secretkey", "jwt-secret", "supersecret")
PLACEHOLDER_WORDS = ("changeme", "replaceme", "changethis")

# Webhook secrets are issued by the providers in different shapes (hex, base64, `whsec_...`),
# so the rule is about guessability, not format (docs/operations.md#preflight): at least
# MIN_WEBHOOK_SECRET_CHARS characters (after a `whsec_` prefix) and at least
# MIN_WEBHOOK_SECRET_BITS of estimated entropy (length x Shannon entropy of its characters),
# and no demo or placeholder value.
MIN_WEBHOOK_SECRET_CHARS = 16
MIN_WEBHOOK_SECRET_BITS = 64

# The filter's built-in webhook sources (crates/aura-guard-core/src/webhook/config.rs).
BUILTIN_SOURCES = ("square", "toast", "clover", "stripe", "twilio", "github", "shopify", "slack",
                   "standard")
# HSTS must last at least a year: the filter's default and the browsers' preload minimum.
MIN_HSTS_MAX_AGE = 31536000
# envoyproxy/ratelimit reads REDIS_URL as host:port (redis:// and rediss:// URLs accepted too).
DEFAULT_AUDIT_DIR_PRODUCTION = "/var/log/auraconnect/audit"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
POSTGRES_TLS_MODES = {"require", "verify-ca", "verify-full"}


class Check:
    def __init__(self, name, ok, detail, fix=""):
        self.name, self.ok, self.detail, self.fix = name, ok, detail, fix


def passed(name, detail):
    return Check(name, True, detail)


def failed(name, detail, fix):
    return Check(name, False, detail, fix)


# --- inputs ------------------------------------------------------------------------------------

def read_env_file(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            key = key.strip()
            if key.startswith("export "):
                key = key[len("export "):].strip()
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            out[key] = value
    return out


def walk(node):
    yield node
    if isinstance(node, dict):
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def plugin_config_in(envoy_cfg):
    """The aura-guard HTTP filter's plugin configuration in a rendered Envoy config."""
    for node in walk(envoy_cfg):
        if isinstance(node, dict) and node.get("name") == "aura-guard":
            conf = (node.get("typed_config") or {}).get("config") or {}
            value = conf.get("configuration")
            if isinstance(value, dict):
                value = value.get("value", "")
            if isinstance(value, str):
                return json.loads(value) if value.strip() else {}
    return None


def cluster_address(envoy_cfg, name):
    """(host, port, tls) of the first endpoint of cluster `name`, or None."""
    clusters = ((envoy_cfg or {}).get("static_resources") or {}).get("clusters") or []
    for c in clusters:
        if c.get("name") != name:
            continue
        for node in walk(c.get("load_assignment") or {}):
            if isinstance(node, dict) and "socket_address" in node:
                sa = node["socket_address"]
                return sa.get("address"), int(sa.get("port_value", 0)), "transport_socket" in c
    return None


def lookup(env, name):
    v = env.get(name)
    return v if v else None


# --- checks ------------------------------------------------------------------------------------

def check_environment(env, plugin):
    value = lookup(env, "ENVIRONMENT")
    source = "ENVIRONMENT"
    if value is None and isinstance(plugin.get("environment"), str):
        value, source = plugin["environment"], "plugin configuration `environment`"
    if value is None:
        return failed("environment", "ENVIRONMENT is not set (the filter assumes production and "
                      "warns; the collector and the application do not)",
                      "set ENVIRONMENT=production for Envoy, the collector and the application")
    if value.strip().lower() != "production":
        return failed("environment", f"{source} is {value!r}",
                      "set ENVIRONMENT=production (debug endpoints open, webhooks unverified and "
                      "the rate limiter failing open outside production)")
    return passed("environment", f"{source}=production")


def weak_jwt_secret(secret):
    """The filter's rule: why production refuses `secret`, or None."""
    lower = secret.strip().lower()
    squashed = lower.replace("-", "").replace("_", "")
    if lower in DEMO_JWT_SECRETS or any(w in squashed for w in PLACEHOLDER_WORDS):
        return "is a known demo or placeholder value"
    if len(secret.encode()) < MIN_JWT_SECRET_BYTES:
        return f"is shorter than {MIN_JWT_SECRET_BYTES} bytes"
    return None


def entropy_bits(s):
    counts = Counter(s)
    per_char = -sum(n / len(s) * math.log2(n / len(s)) for n in counts.values())
    return per_char * len(s)


def weak_webhook_secret(secret):
    lower = secret.strip().lower()
    squashed = lower.replace("-", "").replace("_", "")
    if lower in DEMO_JWT_SECRETS or any(w in squashed for w in PLACEHOLDER_WORDS):
        return "is a known demo or placeholder value"
    body = secret[len("whsec_"):] if secret.startswith("whsec_") else secret
    if len(body) < MIN_WEBHOOK_SECRET_CHARS:
        return f"is shorter than {MIN_WEBHOOK_SECRET_CHARS} characters"
    bits = entropy_bits(body)
    if bits < MIN_WEBHOOK_SECRET_BITS:
        return f"has about {bits:.0f} bits of entropy (< {MIN_WEBHOOK_SECRET_BITS})"
    return None


def env_suffix(source):
    return source.upper().replace("-", "_")


def webhook_sources(env, plugin):
    """{source: [(where, secret), ...]} for every source the deployment configures: named in
    the plugin configuration, or with a WEBHOOK_SECRET_/WEBHOOK_URL_ variable. Secrets from the
    environment come first, as the filter orders them (current, previous, then configured)."""
    configured = ((plugin.get("webhook") or {}).get("sources") or {})
    names = list(configured)
    for b in BUILTIN_SOURCES:
        if b not in names:
            names.append(b)
    out = {}
    for name in names:
        suffix = env_suffix(name)
        cur = lookup(env, f"WEBHOOK_SECRET_{suffix}")
        prev = lookup(env, f"WEBHOOK_SECRET_{suffix}_PREVIOUS")
        url = lookup(env, f"WEBHOOK_URL_{suffix}")
        cfg_secrets = (configured.get(name) or {}).get("secrets") or []
        if name not in configured and cur is None and prev is None and url is None:
            continue
        secrets = []
        if cur is not None:
            secrets.append((f"WEBHOOK_SECRET_{suffix}", cur))
        if prev is not None:
            secrets.append((f"WEBHOOK_SECRET_{suffix}_PREVIOUS", prev))
        for i, s in enumerate(cfg_secrets):
            secrets.append((f"webhook.sources.{name}.secrets[{i}]", s))
        out[name] = (secrets, cur is not None or bool(cfg_secrets))
    # A WEBHOOK_SECRET_ for a source the filter does not know is never read: a typo.
    known = {env_suffix(n) for n in names}
    for key in env:
        if key.startswith("WEBHOOK_SECRET_"):
            suffix = key[len("WEBHOOK_SECRET_"):]
            base = suffix[:-len("_PREVIOUS")] if suffix.endswith("_PREVIOUS") else suffix
            if base not in known:
                out.setdefault(f"?{base.lower()}", ([(key, None)], False))
    return out


def check_webhook_secrets(env, plugin):
    sources = webhook_sources(env, plugin)
    if not sources:
        return passed("webhook_secrets", "no webhook source configured (every webhook route "
                      "answers 401 in production)")
    problems, fixes = [], []
    for name, (secrets, has_current) in sources.items():
        if name.startswith("?"):
            key = secrets[0][0]
            problems.append(f"{key} names no configured source")
            fixes.append(f"add `webhook.sources.{name[1:]}` to the plugin configuration (and "
                         f"{key} to host_env_keys), or remove {key}")
            continue
        if not has_current:
            problems.append(f"{name}: no current secret")
            fixes.append(f"set WEBHOOK_SECRET_{env_suffix(name)} (the provider's signing secret)")
        for where, secret in secrets:
            why = weak_webhook_secret(secret)
            if why:
                problems.append(f"{where} {why}")
                fixes.append(f"replace {where} with the provider-issued secret or a random one "
                             "(e.g. `openssl rand -hex 32`), rotating as docs/webhooks.md says")
    if problems:
        return failed("webhook_secrets", "; ".join(problems), "; ".join(dict.fromkeys(fixes)))
    return passed("webhook_secrets", "strong secrets for " + ", ".join(sorted(sources)))


def check_jwt_secret(env, plugin):
    name = (plugin.get("jwt") or {}).get("secret_env") or "JWT_SECRET_KEY"
    secret = lookup(env, name)
    fix = f"set {name} to a random secret of at least {MIN_JWT_SECRET_BYTES} bytes " \
          "(`openssl rand -hex 32`), the same one the application signs with"
    if secret is None:
        return failed("jwt_secret", f"{name} is not set", fix)
    why = weak_jwt_secret(secret)
    if why:
        return failed("jwt_secret", f"{name} {why}", fix)
    others = [k for k, v in env.items() if v == secret and k != name and
              (k.startswith("WEBHOOK_SECRET_") or k in ("AUDIT_COLLECTOR_TOKEN", "REDIS_AUTH"))]
    if others:
        return failed("jwt_secret", f"{name} is also used as {', '.join(sorted(others))}",
                      f"give {name} a value of its own: one leaked secret must not open another")
    return passed("jwt_secret", f"{name}: {len(secret.encode())} bytes, not a known value, unique")


def grpc_health(host, port, tls, timeout):
    """grpc.health.v1.Health/Check for the whole server: the status number (1 = SERVING)."""
    import h2.config
    import h2.connection
    import h2.events
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        if tls:
            ctx = ssl.create_default_context()
            ctx.set_alpn_protocols(["h2"])
            sock = ctx.wrap_socket(sock, server_hostname=host)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "POST"), (":scheme", "https" if tls else "http"),
                                (":path", "/grpc.health.v1.Health/Check"),
                                (":authority", f"{host}:{port}"), ("te", "trailers"),
                                ("content-type", "application/grpc")])
        # An empty HealthCheckRequest: uncompressed, length 0.
        conn.send_data(sid, b"\x00\x00\x00\x00\x00", end_stream=True)
        sock.sendall(conn.data_to_send())
        data, grpc_status = b"", None
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            for ev in conn.receive_data(chunk):
                if isinstance(ev, h2.events.DataReceived):
                    data += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, (h2.events.TrailersReceived, h2.events.ResponseReceived)):
                    for k, v in ev.headers:
                        if k in (b"grpc-status", "grpc-status"):
                            grpc_status = int(v)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                    sock.sendall(conn.data_to_send())
                    if grpc_status not in (None, 0):
                        raise OSError(f"grpc-status {grpc_status}")
                    # HealthCheckResponse: field 1 (status) varint, after the 5-byte prefix.
                    msg = data[5:]
                    return msg[1] if len(msg) >= 2 and msg[0] == 0x08 else 0
            sock.sendall(conn.data_to_send())
        raise OSError("connection closed before the answer")
    finally:
        sock.close()


def check_ratelimit(envoy_cfg, plugin, args):
    rl = plugin.get("ratelimit") or {}
    if rl.get("enabled") is False:
        return failed("ratelimit_service", "ratelimit.enabled is false: no auth rate limiting",
                      "enable `ratelimit` in the plugin configuration and run "
                      "envoyproxy/ratelimit (docs/ratelimit.md)")
    cluster = rl.get("cluster") or "ratelimit"
    if args.ratelimit_addr:
        host, port = args.ratelimit_addr.rsplit(":", 1)
        addr = (host.strip("[]"), int(port), False)
    else:
        addr = cluster_address(envoy_cfg, cluster)
    if addr is None:
        return failed("ratelimit_service", f"no `{cluster}` cluster address (no --envoy-config?)",
                      "pass --envoy-config with the rendered Envoy config, or --ratelimit-addr")
    host, port, tls = addr
    try:
        status = grpc_health(host, port, tls, args.timeout)
    except (OSError, ValueError) as e:
        return failed("ratelimit_service", f"{host}:{port}: {e}",
                      f"start envoyproxy/ratelimit where the `{cluster}` cluster points "
                      "(docs/ratelimit.md), or fix the cluster address")
    if status != 1:
        return failed("ratelimit_service", f"{host}:{port}: health status {status}, not SERVING",
                      "check the rate-limit service's log and its Redis (REDIS_URL)")
    return passed("ratelimit_service", f"{host}:{port} SERVING (gRPC health)")


def redis_target(url):
    """(host, port, password, tls) from envoyproxy/ratelimit's REDIS_URL."""
    if "://" not in url:
        url = "redis://" + url
    u = urllib.parse.urlsplit(url)
    return u.hostname, u.port or 6379, u.password, u.scheme == "rediss"


def check_redis(env, args):
    url = lookup(env, "REDIS_URL")
    if url is None:
        return failed("redis", "REDIS_URL is not set",
                      "set REDIS_URL (the rate-limit service's Redis, host:port) in this "
                      "environment as the rate-limit service has it")
    try:
        host, port, password, tls = redis_target(url)
        password = password or lookup(env, "REDIS_AUTH")
        tls = tls or (lookup(env, "REDIS_TLS") or "").lower() == "true"
        sock = socket.create_connection((host, port), timeout=args.timeout)
        try:
            if tls:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            cmds = b""
            if password:
                cmds += resp(b"AUTH", password.encode())
            cmds += resp(b"PING")
            sock.sendall(cmds)
            answer = b""
            while b"PONG" not in answer and b"-" not in answer[:1]:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        finally:
            sock.close()
    except (OSError, ValueError) as e:
        return failed("redis", f"REDIS_URL: {e}",
                      "start Redis where REDIS_URL points, or fix REDIS_URL")
    if b"+PONG" not in answer:
        first = answer.split(b"\r\n", 1)[0].decode(errors="replace")
        return failed("redis", f"{host}:{port} answered {first!r}",
                      "give the preflight the rate-limit service's REDIS_AUTH / REDIS_URL")
    return passed("redis", f"{host}:{port} answers PING")


def resp(*parts):
    out = b"*%d\r\n" % len(parts)
    for p in parts:
        out += b"$%d\r\n%s\r\n" % (len(p), p)
    return out


def http_call(url, method, path, headers=None, body=None, timeout=3.0):
    u = urllib.parse.urlsplit(url)
    cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = cls(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def check_collector(env, envoy_cfg, args):
    if args.collector_url:
        url = args.collector_url.rstrip("/")
    else:
        addr = cluster_address(envoy_cfg, "audit_collector")
        if addr is None:
            return failed("collector", "no `audit_collector` cluster address "
                          "(no --envoy-config?)",
                          "pass --envoy-config with the rendered Envoy config, or "
                          "--collector-url")
        host, port, tls = addr
        host = f"[{host}]" if ":" in host else host
        url = f"{'https' if tls else 'http'}://{host}:{port}"
    token = lookup(env, "AUDIT_COLLECTOR_TOKEN")
    if token is None:
        return failed("collector", "AUDIT_COLLECTOR_TOKEN is not set",
                      "set AUDIT_COLLECTOR_TOKEN (>= 16 characters, `openssl rand -hex 32`) "
                      "for Envoy and the collector")
    try:
        status, _ = http_call(url, "GET", "/healthz", timeout=args.timeout)
        if status != 200:
            raise OSError(f"/healthz answered {status}")
        # An empty batch: the collector checks the token first, then refuses the empty body
        # with 400 before touching storage, so nothing is written (docs/operations.md).
        status, body = http_call(url, "POST", "/v1/batches", timeout=args.timeout,
                                 headers={"authorization": f"Bearer {token}",
                                          "content-type": "application/x-ndjson"}, body=b"")
    except OSError as e:
        return failed("collector", f"{url}: {e}",
                      "start aura-collector where the `audit_collector` cluster points "
                      "(docs/audit.md)")
    if status == 401:
        return failed("collector", f"{url} refuses AUDIT_COLLECTOR_TOKEN",
                      "give Envoy and the collector the same AUDIT_COLLECTOR_TOKEN and restart "
                      "both (docs/operations.md#secret-rotation)")
    if status != 400:
        return failed("collector", f"{url}: the token probe answered {status}",
                      "check the collector's log")
    return passed("collector", f"{url} up, token accepted (empty-batch probe, nothing stored)")


def check_audit_dir(env):
    path = lookup(env, "AUDIT_LOG_DIR")
    where = "AUDIT_LOG_DIR"
    if path is None:
        path, where = DEFAULT_AUDIT_DIR_PRODUCTION, "the collector's production default"
    fix = f"chmod o-rwx {path} and its files (owner: the collector's user; group read for " \
          "the auditors at most)"
    try:
        st = os.stat(path)
    except OSError as e:
        return failed("audit_dir", f"{path} ({where}): {e.strerror}",
                      f"create {path} owned by the collector's user, mode 0750 (or set "
                      "AUDIT_LOG_DIR)")
    if not stat.S_ISDIR(st.st_mode):
        return failed("audit_dir", f"{path} is not a directory", f"make {path} a directory")
    open_to_all = []
    if st.st_mode & 0o007:
        open_to_all.append(f"{path} is mode {stat.S_IMODE(st.st_mode):04o}")
    for name in sorted(os.listdir(path)):
        fst = os.stat(os.path.join(path, name))
        if fst.st_mode & 0o007:
            open_to_all.append(f"{name} is mode {stat.S_IMODE(fst.st_mode):04o}")
    if open_to_all:
        return failed("audit_dir", "world access: " + ", ".join(open_to_all), fix)
    return passed("audit_dir", f"{path}: mode {stat.S_IMODE(st.st_mode):04o}, no world access")


def check_database_tls(env):
    url = lookup(env, "AUDIT_DATABASE_URL") or lookup(env, "DATABASE_URL")
    if url is None:
        return passed("database_tls", "no database URL: the collector's local SQLite file "
                      "(./data/audit.db), no network")
    if url.startswith("sqlite:"):
        return passed("database_tls", "SQLite: a local file, no network (note: keep it on the "
                      "collector's disk, with the audit directory's permissions)")
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("postgres", "postgresql"):
        return failed("database_tls", f"unknown database URL scheme {u.scheme!r}",
                      "use postgresql://...?sslmode=require (or verify-full) or sqlite://")
    mode = (urllib.parse.parse_qs(u.query).get("sslmode") or [None])[-1]
    if mode not in POSTGRES_TLS_MODES:
        what = f"sslmode={mode}" if mode else "without sslmode (libpq's default, prefer, " \
            "falls back to plaintext)"
        return failed("database_tls", f"PostgreSQL at {u.hostname} {what}",
                      "add sslmode=verify-full (or at least require) to AUDIT_DATABASE_URL")
    return passed("database_tls", f"PostgreSQL at {u.hostname} with sslmode={mode}")


def check_debug(env, plugin):
    debug = plugin.get("debug") or {}
    enabled = lookup(env, "DEBUG_ENDPOINTS_ENABLED")
    problems = []
    if enabled is not None and enabled.lower() == "true":
        problems.append("DEBUG_ENDPOINTS_ENABLED=true")
    elif enabled is None and debug.get("enabled") is True:
        problems.append("debug.enabled is true")
    if "production" in (debug.get("default_allowed_envs") or []):
        problems.append("debug.default_allowed_envs includes production")
    for ep in debug.get("endpoints") or []:
        if "production" in (ep.get("allowed_envs") or []):
            problems.append(f"debug endpoint {ep.get('name')} allowed in production")
    if problems:
        return failed("debug_endpoints", "; ".join(problems),
                      "unset DEBUG_ENDPOINTS_ENABLED and DEBUG_ENDPOINTS_WHITELIST, and keep "
                      "production out of `debug` allowed_envs (docs/debug-and-versions.md)")
    return passed("debug_endpoints", "closed in production")


def check_hsts(plugin):
    headers = plugin.get("headers") or {}
    common = headers.get("common")
    production = headers.get("production")
    # The filter's defaults (README, "Configuration"): HSTS in production, none in common.
    effective = dict(common or {})
    if production is None:
        effective["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains; preload"
    else:
        effective.update(production)
    value = next((v for k, v in effective.items()
                  if k.lower() == "strict-transport-security"), None)
    fix = "keep Strict-Transport-Security in `headers.production` (default " \
          "`max-age=31536000; includeSubDomains; preload`) and serve only HTTPS at the edge"
    if value is None:
        return failed("hsts", "no Strict-Transport-Security header in production", fix)
    max_age = None
    for part in value.split(";"):
        k, _, v = part.strip().partition("=")
        if k.lower() == "max-age" and v.strip().isdigit():
            max_age = int(v)
    if max_age is None or max_age < MIN_HSTS_MAX_AGE:
        return failed("hsts", f"Strict-Transport-Security {value!r}: max-age under a year", fix)
    return passed("hsts", f"Strict-Transport-Security: {value}")


def check_admin(envoy_cfg):
    if envoy_cfg is None:
        return failed("envoy_admin", "no rendered Envoy config given",
                      "pass --envoy-config with the config Envoy runs")
    admin = envoy_cfg.get("admin")
    if not admin or not admin.get("address"):
        return passed("envoy_admin", "no admin interface")
    address = admin["address"]
    if "pipe" in address:
        return passed("envoy_admin", f"unix socket {address['pipe'].get('path')}")
    sa = address.get("socket_address") or {}
    host = sa.get("address", "")
    if host in LOOPBACK:
        return passed("envoy_admin", f"bound to {host}:{sa.get('port_value')}")
    return failed("envoy_admin", f"admin bound to {host}:{sa.get('port_value')}",
                  "bind admin to 127.0.0.1 (admin.address.socket_address.address): it can "
                  "change Envoy's state, dump its config and stop it")


# --- main --------------------------------------------------------------------------------------

def run(env, envoy_cfg, plugin, args):
    return [
        check_environment(env, plugin),
        check_webhook_secrets(env, plugin),
        check_jwt_secret(env, plugin),
        check_ratelimit(envoy_cfg, plugin, args),
        check_redis(env, args),
        check_collector(env, envoy_cfg, args),
        check_audit_dir(env),
        check_database_tls(env),
        check_debug(env, plugin),
        check_hsts(plugin),
        check_admin(envoy_cfg),
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--envoy-config", help="the rendered Envoy config (YAML or JSON)")
    ap.add_argument("--plugin-config", help="the plugin configuration (JSON), when it is not "
                    "inside --envoy-config")
    ap.add_argument("--env-file", help="KEY=VALUE lines overlaid on this process's environment")
    ap.add_argument("--collector-url", help="the collector as this host reaches it "
                    "(default: the audit_collector cluster)")
    ap.add_argument("--ratelimit-addr", help="host:port of the rate-limit service's gRPC "
                    "(default: the ratelimit cluster)")
    ap.add_argument("--timeout", type=float, default=3.0, help="seconds per network probe")
    args = ap.parse_args(argv)

    env = dict(os.environ)
    envoy_cfg = None
    try:
        if args.env_file:
            env.update(read_env_file(args.env_file))
        if args.envoy_config:
            import yaml
            with open(args.envoy_config) as f:
                envoy_cfg = yaml.safe_load(f) or {}
        plugin = None
        if args.plugin_config:
            with open(args.plugin_config) as f:
                text = f.read()
            plugin = json.loads(text) if text.strip() else {}
        elif envoy_cfg is not None:
            plugin = plugin_config_in(envoy_cfg)
    except (OSError, ValueError) as e:
        print(f"preflight: {e}", file=sys.stderr)
        return 2
    plugin = plugin if isinstance(plugin, dict) else {}

    checks = run(env, envoy_cfg, plugin, args)
    width = max(len(c.name) for c in checks)
    print(f"{'check':<{width}}  result  detail")
    for c in checks:
        print(f"{c.name:<{width}}  {'PASS' if c.ok else 'FAIL':<6}  {c.detail}")
        if not c.ok:
            print(f"{'':<{width}}  {'':<6}  fix: {c.fix}")
    bad = [c.name for c in checks if not c.ok]
    print(f"preflight: {len(checks) - len(bad)} passed, {len(bad)} failed"
          + (f" ({', '.join(bad)})" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
