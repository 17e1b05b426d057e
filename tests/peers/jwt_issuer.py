"""A token issuer independent of the gateway: PyJWT, with keys made by `cryptography`.

Reads one JSON request on stdin and prints one JSON answer on stdout, then exits.

Request:
    {"keys": {"NAME": {"type": "RSA" | "EC-P256" | "EC-P384" | "Ed25519" | "oct",
                       "secret": "...",          # oct only
                       "kid": "..."}},           # optional, put in the JWK
     "tokens": [{"key": "NAME", "alg": "RS256", "claims": {...},
                 "headers": {"kid": "..."}}]}    # headers optional

Answer:
    {"keys": {"NAME": {"pem": "<public key PEM>", "jwk": {<public JWK>}}},
     "tokens": ["<compact JWS>", ...]}            # in request order

Keys are new on every run; nothing is written to disk.
"""

import json
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm


def make_key(spec):
    kind = spec["type"]
    if kind == "oct":
        secret = spec["secret"].encode()
        return secret, None, HMACAlgorithm.to_jwk(secret, as_dict=True)
    if kind == "RSA":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        to_jwk = RSAAlgorithm.to_jwk
    elif kind == "EC-P256":
        private = ec.generate_private_key(ec.SECP256R1())
        to_jwk = ECAlgorithm.to_jwk
    elif kind == "EC-P384":
        private = ec.generate_private_key(ec.SECP384R1())
        to_jwk = ECAlgorithm.to_jwk
    elif kind == "Ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
        to_jwk = OKPAlgorithm.to_jwk
    else:
        raise SystemExit(f"unknown key type {kind!r}")
    public = private.public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return private, pem, to_jwk(public, as_dict=True)


def main():
    request = json.load(sys.stdin)
    private_keys = {}
    keys_out = {}
    for name, spec in request.get("keys", {}).items():
        private, pem, jwk = make_key(spec)
        if "kid" in spec:
            jwk["kid"] = spec["kid"]
        private_keys[name] = private
        keys_out[name] = {"pem": pem, "jwk": jwk}
    tokens = []
    for t in request.get("tokens", []):
        tokens.append(
            jwt.encode(
                t["claims"],
                private_keys[t["key"]],
                algorithm=t["alg"],
                headers=t.get("headers"),
            )
        )
    json.dump({"keys": keys_out, "tokens": tokens}, sys.stdout)


if __name__ == "__main__":
    main()
