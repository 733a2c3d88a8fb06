#!/usr/bin/env python3
"""Signs a webhook body as its real sender does, independently of hookcast.

Python's standard library only (hmac, hashlib, base64), written from each
sender's documentation and official toolkit source, never from hookcast's
own signer. The clock is Python's. Used by infra/local/tests/senders.rs; sdk-sign.js beside it signs with the senders' own SDKs.

    sign.py KIND SECRET BODY_FILE [KEY=VALUE ...]

prints a JSON object of the headers to send with the body's exact bytes.
Extra KEY=VALUE pairs are headers the sender also sends (an event type, a
delivery id), passed through unless the scheme signs them.
"""

import base64
import hashlib
import hmac
import json
import sys
import time


def b64url(raw):
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def mac(key, msg, algo=hashlib.sha256):
    return hmac.new(key, msg, algo).digest()


def github(secret, body, extra):
    # docs.github.com "Validating webhook deliveries": HMAC-SHA256 hex of the body.
    return {"X-Hub-Signature-256": "sha256=" + mac(secret, body).hex()}


def netlify(secret, body, extra):
    # Netlify: a JWS (HS256) with iss "netlify" and sha256 = hex SHA-256 of the body.
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64url(json.dumps({"iss": "netlify", "sha256": hashlib.sha256(body).hexdigest()}).encode())
    signing_input = f"{header}.{claims}".encode()
    return {"X-Webhook-Signature": f"{header}.{claims}.{b64url(mac(secret, signing_input))}"}


def vercel(secret, body, extra):
    # Vercel: x-vercel-signature = hex HMAC-SHA1 of the body.
    return {"x-vercel-signature": mac(secret, body, hashlib.sha1).hex()}


def stripe(secret, body, extra):
    # Stripe: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">, the whole whsec_ string as key.
    t = str(int(time.time()))
    return {"Stripe-Signature": f"t={t},v1={mac(secret, t.encode() + b'.' + body).hex()}"}


def shopify(secret, body, extra):
    # Shopify: X-Shopify-Hmac-Sha256 = base64 HMAC-SHA256 of the body.
    return {"X-Shopify-Hmac-Sha256": base64.b64encode(mac(secret, body)).decode()}


def sanity(secret, body, extra):
    # @sanity/webhook: t=<unix ms>,v1=<base64url HMAC-SHA256 of "t.body">.
    t = str(int(time.time() * 1000))
    return {"sanity-webhook-signature": f"t={t},v1={b64url(mac(secret, t.encode() + b'.' + body))}"}


def contentful(secret, body, extra, path):
    # @contentful/node-apps-toolkit signRequest: hex HMAC-SHA256 of
    # method \n path \n k:v;k:v (sorted, lower-case, trimmed) \n body.
    t = str(int(time.time() * 1000))
    headers = {k.strip().lower(): v.strip() for k, v in extra.items()}
    names = sorted(set(headers) | {"x-contentful-signed-headers", "x-contentful-timestamp"})
    headers["x-contentful-signed-headers"] = ",".join(names)
    headers["x-contentful-timestamp"] = t
    canonical = "\n".join(["POST", path, ";".join(f"{k}:{headers[k]}" for k in names), ""]).encode() + body
    return {
        "x-contentful-signature": mac(secret, canonical).hex(),
        "x-contentful-signed-headers": headers["x-contentful-signed-headers"],
        "x-contentful-timestamp": t,
    }


def standard(secret, body, extra, prefix):
    # Standard Webhooks / Svix: v1,<base64 HMAC-SHA256 of "id.t.body">, key = base64 after whsec_.
    key = base64.b64decode(secret.decode().split("_", 1)[1])
    msg_id = "msg_" + hashlib.sha256(body + str(time.time()).encode()).hexdigest()[:24]
    t = str(int(time.time()))
    sig = base64.b64encode(mac(key, f"{msg_id}.{t}.".encode() + body)).decode()
    return {f"{prefix}-id": msg_id, f"{prefix}-timestamp": t, f"{prefix}-signature": f"v1,{sig}"}


def strapi(secret, body, extra):
    # Strapi signs nothing; its docs add Authorization: Bearer <token>.
    return {"Authorization": "Bearer " + secret.decode()}


def custom(secret, body, extra):
    # A sender hookcast has no kind for: base64 HMAC-SHA1 of "t.body" after "v1=".
    t = str(int(time.time()))
    return {"X-Signature": "v1=" + base64.b64encode(mac(secret, t.encode() + b"." + body, hashlib.sha1)).decode(),
            "X-Timestamp": t}


def main():
    kind, secret, body_file, *pairs = sys.argv[1:]
    extra = dict(p.split("=", 1) for p in pairs)
    path = extra.pop("path", None)
    body = open(body_file, "rb").read()
    secret = secret.encode()
    if kind == "contentful":
        headers = contentful(secret, body, extra, path)
    elif kind in ("svix", "webhook"):
        headers = standard(secret, body, extra, kind)
    else:
        headers = {"github": github, "netlify": netlify, "vercel": vercel, "stripe": stripe, "shopify": shopify,
                   "sanity": sanity, "strapi": strapi, "custom": custom}[kind](secret, body, extra)
    print(json.dumps({**extra, **headers}))


if __name__ == "__main__":
    main()
