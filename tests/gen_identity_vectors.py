#!/usr/bin/env python3
"""Writes crates/aura-guard-core/tests/data/identity_vectors.json: what the upstream framework
(FastAPI/Starlette, the original's, and PyJWT) reads from hostile login bodies and refresh
tokens, so the filter's unit tests pin parity with the real thing (docs/ratelimit.md, "Reading
the body"). Run once when the cases change, in a virtualenv with the upstream's packages:

    python -m venv /tmp/v && /tmp/v/bin/pip install fastapi python-multipart httpx pyjwt
    python -m venv /tmp/j && /tmp/j/bin/pip install pyjwt==2.13.0
    /tmp/v/bin/python tests/gen_identity_vectors.py /tmp/j/bin/python

Each body vector says which username FastAPI reads through a form route (`Form()` fields, as
the original's OAuth2PasswordRequestForm login) and through a JSON route (a pydantic body), or
null. Each token vector says which `sub` `jwt.decode` accepts, or null, for this PyJWT and for
the PyJWT of every Python named on the command line: up to 2.13 PyJWT decodes segments with
Python's lenient `base64.urlsafe_b64decode`; 2.14 and later accept canonical segments only.
"""
import base64
import json
import os
import subprocess
import sys
import warnings
from typing import Annotated

warnings.filterwarnings("ignore")

import fastapi  # noqa: E402
import jwt  # noqa: E402
import python_multipart  # noqa: E402,F401  (Starlette's form parser)
import starlette  # noqa: E402
from fastapi import FastAPI, Form  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from pydantic import BaseModel  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "aura-guard-core",
                   "tests", "data", "identity_vectors.json")
JWT_SECRET = "vector-secret"
EXP = 4102444800  # 2100-01-01: the unit tests' clock is earlier

app = FastAPI()


@app.post("/form")
def form_route(username: Annotated[str, Form()], password: Annotated[str, Form()] = ""):
    return {"u": username}


class Login(BaseModel):
    username: str
    password: str = ""


@app.post("/json")
def json_route(b: Login):
    return {"u": b.username}


client = TestClient(app, raise_server_exceptions=False)


def read(path, ct, body):
    r = client.post(path, content=body, headers={} if ct is None else {"content-type": ct})
    return r.json()["u"] if r.status_code == 200 else None


LOGIN = {"username": "victim", "password": "guess"}
PLAIN = json.dumps(LOGIN)


def mp(parts, boundary="XX", end=True):
    out = b""
    for headers, value in parts:
        out += b"--" + boundary.encode() + b"\r\n" + headers + b"\r\n\r\n" + value + b"\r\n"
    return out + (b"--" + boundary.encode() + b"--\r\n" if end else b"")


def cd(name):
    return b'Content-Disposition: form-data; name="' + name + b'"'


MP_LOGIN = [(cd(b"username"), b"victim"), (cd(b"password"), b"guess")]
MPCT = "multipart/form-data; boundary=XX"


def bodies():
    j = "application/json"
    f = "application/x-www-form-urlencoded"
    yield "json plain", j, PLAIN.encode()
    yield "json utf-8 BOM", j, b"\xef\xbb\xbf" + PLAIN.encode()
    for enc in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"):
        yield f"json {enc}", j, PLAIN.encode(enc)
    yield "json utf-16-le with BOM", j, ("\ufeff" + PLAIN).encode("utf-16-le")
    yield "json utf-16 without content type", None, PLAIN.encode("utf-16")
    for v in ("NaN", "Infinity", "-Infinity", "1e400", "-0.0e-0", "1" * 300):
        yield f"json value {v[:12]}", j, ('{"n": %s, "username": "victim", "password": "g"}' % v).encode()
    yield "json lone surrogate escape", j, b'{"username": "victim", "password": "\\ud800"}'
    yield "json lone surrogate escape in a key", j, b'{"\\udc00": 1, "username": "victim"}'
    yield "json raw surrogate bytes", j, b'{"username": "victim", "password": "\xed\xa0\x80"}'
    yield "json utf-16 lone surrogate", j, '{"username": "victim", "password": "x"}'.encode(
        "utf-16-le").replace("x".encode("utf-16-le"), b"\x00\xd8")
    yield "json nesting 400 deep", j, ('{"n": %s1%s, "username": "victim"}' % ("[" * 400, "]" * 400)).encode()
    yield "json duplicate key last wins", j, b'{"username": "decoy", "username": "victim"}'
    yield "json duplicate key, a number last", j, b'{"username": "victim", "username": 1}'
    yield "json escaped key", j, b'{"user\\u006eame": "victim"}'
    yield "json escaped value", j, b'{"username": "v\\u0069ctim"}'
    yield "json whitespace around", j, b' \r\n\t{"username" : "victim" }\n '
    yield "json mixed case type with charset", "Application/JSON; charset=UTF-8", PLAIN.encode()
    yield "json vnd+json", "application/vnd.api+json", PLAIN.encode()
    yield "json problem+json", "application/problem+json", PLAIN.encode()
    yield "json empty parameter", "application/json;", PLAIN.encode()
    yield "json trailing comma", j, b'{"username": "victim",}'
    yield "json trailing garbage", j, PLAIN.encode() + b" x"
    yield "json single quotes", j, b"{'username': 'victim'}"
    yield "json two BOMs", j, b"\xef\xbb\xbf\xef\xbb\xbf" + PLAIN.encode()
    yield "json raw tab in a string", j, b'{"username": "vic\ttim"}'
    yield "form plain", f, b"username=victim&password=guess"
    yield "form charset", f + "; charset=utf-8", b"username=victim&password=guess"
    yield "form mixed case type", "Application/X-WWW-Form-Urlencoded; charset=UTF-8", b"username=victim"
    yield "form mixed case type, no parameter", "Application/X-WWW-Form-Urlencoded", b"username=victim"
    yield "form duplicate last wins", f, b"username=decoy&username=victim"
    yield "form bare name then value", f, b"username&username=victim"
    yield "form empty pairs", f, b"&&username=victim&&password=g&"
    yield "form percent-encoded name", f, b"user%6Eame=victim"
    yield "form plus and percent", f, b"username=vic+tim%20x"
    yield "form raw utf-8 bytes", f, b"username=jos\xc3\xa9"
    yield "form percent utf-8", f, b"username=jos%C3%A9"
    yield "form percent latin-1", f, b"username=jos%E9"
    yield "form percent encoded surrogate", f, b"username=v%ED%A0%80"
    yield "form truncated utf-8 escape", f, b"username=v%F0%9F%98"
    yield "form bad escapes", f, b"username=v%zz%"
    yield "form semicolon is no separator", f, b"password=g;username=victim"
    yield "form equals in value", f, b"username=vic=tim"
    yield "multipart", MPCT, mp(MP_LOGIN)
    yield "multipart quoted boundary", 'multipart/form-data; boundary="XX"', mp(MP_LOGIN)
    yield "multipart quoted boundary with space and semicolon", 'multipart/form-data; boundary="a; b"', \
        mp(MP_LOGIN, boundary="a; b")
    yield "multipart browser boundary", "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW", \
        mp(MP_LOGIN, boundary="----WebKitFormBoundary7MA4YWxkTrZu0gW")
    yield "multipart mixed case type and parameter", "Multipart/Form-Data; BOUNDARY=XX", mp(MP_LOGIN)
    yield "multipart repeated boundary, last wins", "multipart/form-data; boundary=YY; boundary=XX", mp(MP_LOGIN)
    yield "multipart no final delimiter", MPCT, mp(MP_LOGIN, end=False)
    yield "multipart body ends in the password", MPCT, mp(MP_LOGIN, end=False)[:-4]
    yield "multipart epilogue", MPCT, mp(MP_LOGIN) + b"epilogue\r\n--XX\r\n"
    yield "multipart leading CRLF", MPCT, b"\r\n" + mp(MP_LOGIN)
    yield "multipart leading CRLF and text", MPCT, b"\r\nhello " + mp(MP_LOGIN)
    yield "multipart preamble", MPCT, b"preamble\r\n" + mp(MP_LOGIN)
    yield "multipart LF only", MPCT, mp(MP_LOGIN).replace(b"\r\n", b"\n")
    yield "multipart unquoted name, no spaces", MPCT, mp([(b"content-disposition:form-data;name=username", b"victim")])
    yield "multipart name in capitals", MPCT, mp([(b'Content-Disposition: form-data; NAME="username"', b"victim")])
    yield "multipart escaped quote in name", MPCT, mp([(b'Content-Disposition: form-data; name="user\\"name"', b"victim")])
    yield "multipart name*", MPCT, mp([(b"Content-Disposition: form-data; name*=utf-8''username", b"victim")])
    yield "multipart name and name*", MPCT, mp([(b"Content-Disposition: form-data; name=username; name*=utf-8''x", b"victim")])
    yield "multipart two dispositions, last wins", MPCT, mp([(cd(b"decoy") + b"\r\n" + cd(b"username"), b"victim")])
    yield "multipart extra part headers", MPCT, mp([(cd(b"username") + b"\r\nContent-Type: text/plain; charset=latin-1\r\nX-A: b", b"victim")])
    yield "multipart file part then field", MPCT, mp([(cd(b"username") + b'; filename="a"', b"decoy"), (cd(b"username"), b"victim")])
    yield "multipart duplicate last wins", MPCT, mp([(cd(b"username"), b"decoy"), (cd(b"username"), b"victim")])
    yield "multipart padding after a delimiter", MPCT, mp(MP_LOGIN).replace(b"\r\n--XX\r\n", b"\r\n--XX \t\r\n")
    yield "multipart padding after the first delimiter", MPCT, mp(MP_LOGIN).replace(b"--XX\r\n", b"--XX \r\n", 1)
    yield "multipart space before the colon", MPCT, mp([(b'Content-Disposition : form-data; name="username"', b"victim")])
    yield "multipart folded header", MPCT, mp([(b"X: y\r\n folded\r\n" + cd(b"username"), b"victim")])
    yield "multipart part without a name", MPCT, mp([(b"Content-Disposition: form-data", b"x"), (cd(b"username"), b"victim")])
    yield "multipart near-delimiters in a value", MPCT, mp([(cd(b"username"), b"victim"),
                                                          (cd(b"password"), b"a\r\n--XXY\r\n--XX-z\n--XX\r\nb")])
    yield "multipart hidden LF part after the real one", MPCT, mp([
        (cd(b"username"), b"victim"),
        (cd(b"password"), b'p\n--XX\r\nContent-Disposition: form-data; name="username"\r\n\r\ndecoy')])
    yield "multipart latin-1 value, utf-8 charset", MPCT, mp([(cd(b"username"), b"jos\xe9")])
    yield "multipart utf-8 value", MPCT, mp([(cd(b"username"), b"jos\xc3\xa9")])
    yield "multipart latin-1 charset", MPCT + "; charset=latin-1", mp([(cd(b"username"), b"jos\xc3\xa9")])
    yield "multipart utf-16 charset", MPCT + "; charset=utf-16", mp([(cd(b"username"), "victim".encode("utf-16"))])
    yield "multipart without boundary", "multipart/form-data", mp(MP_LOGIN)
    yield "multipart with JSON body", MPCT, PLAIN.encode()


def tokens():
    good = jwt.encode({"sub": "alice", "exp": EXP}, JWT_SECRET, algorithm="HS256")
    h, p, s = good.split(".")
    yield "as issued", good
    for pad in ("=", "==", "===", "===="):
        yield f"signature padded {pad}", f"{h}.{p}.{s}{pad}"
    # 32 bytes take 43 characters; the last one carries 2 bits of data and 4 unused ones.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    top = alphabet.index(s[-1]) & 0b111100
    for low in range(4):
        yield f"signature trailing bits {low}", f"{h}.{p}.{s[:-1]}{alphabet[top | low]}"
    yield "signature standard alphabet", f"{h}.{p}.{s.replace('-', '+').replace('_', '/')}"
    # Bytes outside the alphabet are skipped, but count towards PyJWT's padding.
    yield "signature with five junk characters", f"{h}.{p}.{s[:10]}!*{s[10:20]} \t{s[20:]}~"
    yield "signature with two junk characters", f"{h}.{p}.{s[:10]}!{s[10:20]}~{s[20:]}"
    yield "signature with a space and a pad", f"{h}.{p}.{s} ="
    yield "signature with non-ASCII", f"{h}.{p}.{s[:5]}\u00e9{s[5:]}"
    yield "signature with = early in a quad", f"{h}.{p}.={s[:1]}={s[1:]}"
    yield "signature padded then garbage", f"{h}.{p}.{s}=AAAA"
    yield "signature missing a character", f"{h}.{p}.{s[:-1]}"
    yield "signature with an extra character", f"{h}.{p}.{s}A"
    yield "signature with a character changed", f"{h}.{p}.{s[:5]}{'A' if s[5] != 'A' else 'B'}{s[6:]}"
    yield "signature empty", f"{h}.{p}."
    yield "two segments", f"{h}.{p}"
    # Segments the issuer padded (covered by the MAC, so signed here as an issuer would).
    import hashlib
    import hmac as _hmac

    def signed(h64, p64):
        mac = _hmac.new(JWT_SECRET.encode(), f"{h64}.{p64}".encode(), hashlib.sha256).digest()
        return f"{h64}.{p64}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"
    hp = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).decode()
    pp = base64.urlsafe_b64encode(json.dumps({"sub": "bob", "exp": EXP}).encode()).decode()
    yield "header and payload padded by the issuer", signed(hp, pp)
    yield "payload with a dot inside, signed", signed(h, p[:8] + "." + p[8:])
    yield "forged (other secret)", jwt.encode({"sub": "alice", "exp": EXP}, "not-the-secret", algorithm="HS256")
    yield "alg none", jwt.encode({"sub": "alice"}, None, algorithm="none")


# Run in each Python: decodes the tokens on stdin with its PyJWT.
DECODE = """
import json, sys, jwt
subs = []
for token in json.load(sys.stdin):
    try:
        subs.append(jwt.decode(token, %r, algorithms=["HS256"])["sub"])
    except jwt.PyJWTError:
        subs.append(None)
print(json.dumps([jwt.__version__, subs]))
""" % JWT_SECRET


def main():
    out = {
        "generated_by": f"tests/gen_identity_vectors.py with fastapi {fastapi.__version__}, "
                        f"starlette {starlette.__version__}, "
                        f"Python {sys.version.split()[0]}",
        "bodies": [],
        "jwt_secret": JWT_SECRET,
        "tokens": [],
    }
    for note, ct, body in bodies():
        out["bodies"].append({"note": note, "content_type": ct,
                              "body_b64": base64.b64encode(body).decode(),
                              "form": read("/form", ct, body), "json": read("/json", ct, body)})
    toks = list(tokens())
    out["tokens"] = [{"note": note, "token": token, "sub": {}} for note, token in toks]
    for python in [sys.executable] + sys.argv[1:]:
        version, subs = json.loads(subprocess.run(
            [python, "-c", DECODE], input=json.dumps([t for _, t in toks]), text=True,
            capture_output=True, check=True).stdout)
        for entry, sub in zip(out["tokens"], subs):
            entry["sub"][f"PyJWT {version}"] = sub
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    read_by = sum(1 for b in out["bodies"] if b["form"] or b["json"])
    print(f"{OUT}: {len(out['bodies'])} bodies ({read_by} read as a user), {len(out['tokens'])} tokens")


if __name__ == "__main__":
    main()
