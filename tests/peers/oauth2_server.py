"""An OAuth2 authorization server independent of the gateway: Authlib's Flask server.

`oauth2_server.py serve` prints its port, then serves on 127.0.0.1 until killed:

    POST /oauth/token        RFC 6749 client_credentials grant (client_secret_basic or _post)
    POST /oauth/introspect   RFC 7662, for the `gateway` client only
    POST /oauth/revoke       RFC 7009, a client revoking its own token
    GET  /stats              {"introspections": N, "refused": N}: calls to /oauth/introspect
                             answered, and refused for bad client credentials

The clients, their secrets, the scopes each may ask for and their tokens' lifetimes are in
CLIENTS. Tokens are held in memory and carry `iss` ISSUER and `aud` ["orders-api"].
"""

import sys
import threading
import time

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin, grants
from authlib.oauth2.rfc6749.errors import InvalidClientError
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.common.security import generate_token
from flask import Flask, jsonify
from werkzeug.serving import WSGIRequestHandler, make_server

ISSUER = "https://idp.example.test"

# client id: (secret, the scopes it may ask for, its tokens' lifetime in seconds)
CLIENTS = {
    "gateway": ("gateway-secret", "", 3600),
    "mobile-app": ("mobile-secret", "orders:read orders:write profile", 3600),
    "reporter": ("reporter-secret", "reports:read", 3600),
    "short-lived": ("short-secret", "orders:read", 2),
}


class Client(ClientMixin):
    def __init__(self, client_id):
        self.client_id = client_id
        self.secret, self.scope, self.lifetime = CLIENTS[client_id]

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return None

    def get_allowed_scope(self, scope):
        allowed = set(self.scope.split())
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri):
        return False

    def check_client_secret(self, client_secret):
        return client_secret == self.secret

    def check_endpoint_auth_method(self, method, endpoint):
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type):
        return False

    def check_grant_type(self, grant_type):
        return grant_type == "client_credentials"


class Token(TokenMixin):
    def __init__(self, client_id, fields):
        self.client_id = client_id
        self.access_token = fields["access_token"]
        self.scope = fields.get("scope", "")
        self.issued_at = int(time.time())
        self.expires_in = fields["expires_in"]
        self.revoked = False

    def check_client(self, client):
        return client.get_client_id() == self.client_id

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return self.expires_in

    def get_expires_at(self):
        return self.issued_at + self.expires_in

    def is_expired(self):
        return time.time() >= self.get_expires_at()

    def is_revoked(self):
        return self.revoked


TOKENS = {}
STATS = {"introspections": 0, "refused": 0}
LOCK = threading.Lock()


def query_client(client_id):
    return Client(client_id) if client_id in CLIENTS else None


def save_token(fields, request):
    with LOCK:
        TOKENS[fields["access_token"]] = Token(request.client.client_id, fields)


class Introspection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def authenticate_endpoint_client(self, request):
        try:
            return super().authenticate_endpoint_client(request)
        except InvalidClientError:
            with LOCK:
                STATS["refused"] += 1
            raise

    def query_token(self, token_string, token_type_hint):
        with LOCK:
            return TOKENS.get(token_string)

    def check_permission(self, token, client, request):
        return client.client_id == "gateway"

    def introspect_token(self, token):
        return {
            "active": True,
            "client_id": token.client_id,
            "token_type": "Bearer",
            "scope": token.get_scope(),
            "sub": token.client_id,
            "aud": ["orders-api"],
            "iss": ISSUER,
            "exp": token.get_expires_at(),
            "iat": token.issued_at,
        }

    def create_endpoint_response(self, request):
        answer = super().create_endpoint_response(request)
        with LOCK:
            STATS["introspections"] += 1
        return answer


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def query_token(self, token_string, token_type_hint):
        with LOCK:
            return TOKENS.get(token_string)

    def revoke_token(self, token, request):
        token.revoked = True


def app():
    flask = Flask("oauth2_server")
    server = AuthorizationServer(flask, query_client=query_client, save_token=save_token)
    server.register_token_generator(
        "default",
        BearerTokenGenerator(
            access_token_generator=lambda **_: generate_token(42),
            expires_generator=lambda client, grant_type: client.lifetime,
        ),
    )

    class ClientCredentials(grants.ClientCredentialsGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    server.register_grant(ClientCredentials)
    server.register_endpoint(Introspection)
    server.register_endpoint(Revocation)

    @flask.post("/oauth/token")
    def token():
        return server.create_token_response()

    @flask.post("/oauth/introspect")
    def introspect():
        return server.create_endpoint_response(Introspection.ENDPOINT_NAME)

    @flask.post("/oauth/revoke")
    def revoke():
        return server.create_endpoint_response(Revocation.ENDPOINT_NAME)

    @flask.get("/stats")
    def stats():
        with LOCK:
            return jsonify(STATS)

    return flask


class QuietHandler(WSGIRequestHandler):
    """No line per request on the test's output."""

    def log_request(self, code="-", size="-"):
        pass


def main():
    if sys.argv[1:] != ["serve"]:
        raise SystemExit("usage: oauth2_server.py serve")
    server = make_server(
        "127.0.0.1", 0, app(), threaded=True, request_handler=QuietHandler
    )
    print(server.port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
