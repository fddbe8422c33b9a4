"""Authorization for a FHIR server: a static bearer token, or SMART Backend Services.

Hospitals rarely give a pipeline a long-lived token; the SMART Backend Services profile
(client_credentials grant with a signed JWT client assertion, ``private_key_jwt``) is what a
system-to-system client is expected to use. Both kinds are ``httpx.Auth`` objects, so every
request of the Bulk Data client carries the header without the client knowing which kind it has.
A SMART token is fetched on first use, renewed shortly before it expires, and renewed once more
if the server answers 401 anyway (a clock skew or a server restart invalidated it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Generator
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_SCOPE = "system/*.read"
# SMART: the assertion's exp is at most five minutes ahead; stay well inside it.
_ASSERTION_LIFETIME_S = 240
# Renew this long before a token's stated expiry (capped at half its lifetime for short tokens).
_RENEW_MARGIN_S = 30.0


class AuthError(RuntimeError):
    """The server or its token endpoint refused our credentials; the message says why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BearerToken(httpx.Auth):
    """A static token (``Authorization: Bearer <token>``), as issued out of band."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


def _jwk_thumbprint(public_key) -> str:
    """RFC 7638 thumbprint of a public key: a stable ``kid`` when none is configured."""
    if isinstance(public_key, rsa.RSAPublicKey):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public_key))
        members = {k: jwk[k] for k in ("e", "kty", "n")}
    else:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public_key))
        members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode())
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def public_jwk(private_key_pem: bytes, kid: str | None = None) -> dict:
    """The public JWK of a private key, as a server's client registration expects it."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    public = key.public_key()
    if isinstance(key, rsa.RSAPrivateKey):
        jwk, alg = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public)), "RS384"
    else:
        jwk, alg = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public)), "ES384"
    jwk.update({"kid": kid or _jwk_thumbprint(public), "alg": alg, "use": "sig"})
    return jwk


class SmartBackendAuth(httpx.Auth):
    """SMART Backend Services: a signed client assertion exchanged for an access token.

    ``token_url`` is discovered from ``<fhir_base>/.well-known/smart-configuration`` when not
    given. The key is an RSA (signed RS384) or EC P-384 (ES384) private key in PEM; ``kid``
    defaults to the key's RFC 7638 thumbprint, which is what the server's JWKS must carry.
    """

    def __init__(
        self,
        fhir_base: str,
        client_id: str,
        private_key_pem: bytes | str,
        *,
        token_url: str | None = None,
        scope: str = DEFAULT_SCOPE,
        kid: str | None = None,
        timeout: float = 30.0,
        verify: bool = True,
    ) -> None:
        pem = private_key_pem.encode() if isinstance(private_key_pem, str) else private_key_pem
        self._key = serialization.load_pem_private_key(pem, password=None)
        if isinstance(self._key, rsa.RSAPrivateKey):
            self._alg = "RS384"
        elif isinstance(self._key, ec.EllipticCurvePrivateKey):
            self._alg = "ES384"
        else:
            raise AuthError("SMART Backend Services needs an RSA or EC private key")
        self.fhir_base = fhir_base.rstrip("/")
        self.client_id = client_id
        self.scope = scope
        self.kid = kid or _jwk_thumbprint(self._key.public_key())
        self._token_url = token_url
        self._timeout = timeout
        self._verify = verify
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.tokens_issued = 0  # how many tokens this object obtained (renewals show up here)

    @classmethod
    def from_key_file(cls, fhir_base: str, client_id: str, key_path: Path | str, **kwargs):
        return cls(fhir_base, client_id, Path(key_path).read_bytes(), **kwargs)

    @property
    def token_url(self) -> str:
        if self._token_url is None:
            self._token_url = self._discover_token_url()
        return self._token_url

    def _discover_token_url(self) -> str:
        url = f"{self.fhir_base}/.well-known/smart-configuration"
        try:
            response = httpx.get(url, timeout=self._timeout, verify=self._verify)
        except httpx.HTTPError as exc:
            raise AuthError(f"could not read SMART configuration at {url}: {exc}") from exc
        if response.status_code != 200:
            raise AuthError(
                f"SMART configuration at {url} answered HTTP {response.status_code}",
                response.status_code,
            )
        token_url = response.json().get("token_endpoint")
        if not token_url:
            raise AuthError(f"SMART configuration at {url} names no token_endpoint")
        return token_url

    def client_assertion(self) -> str:
        """A fresh signed JWT (unique ``jti``) that authenticates this client once."""
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "exp": now + _ASSERTION_LIFETIME_S,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm=self._alg, headers={"kid": self.kid})

    def _fetch_token(self) -> None:
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self.client_assertion(),
        }
        try:
            response = httpx.post(
                self.token_url, data=form, timeout=self._timeout, verify=self._verify
            )
        except httpx.HTTPError as exc:
            raise AuthError(f"token endpoint {self.token_url} unreachable: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or "access_token" not in body:
            reason = body.get("error_description") or body.get("error") or response.text[:200]
            raise AuthError(
                f"token endpoint {self.token_url} refused client {self.client_id!r} "
                f"(HTTP {response.status_code}): {reason}",
                response.status_code,
            )
        lifetime = float(body.get("expires_in") or 300)
        self._token = body["access_token"]
        self._expires_at = time.monotonic() + lifetime - min(_RENEW_MARGIN_S, lifetime / 2)
        self.tokens_issued += 1

    def access_token(self, *, renew: bool = False) -> str:
        """The current token, fetched or renewed when missing, expiring, or ``renew`` is set."""
        with self._lock:
            if renew or self._token is None or time.monotonic() >= self._expires_at:
                self._fetch_token()
            assert self._token is not None
            return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.access_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            # Only renew if nobody else did meanwhile; then try the request once more.
            with self._lock:
                stale = self._token == token
            request.headers["Authorization"] = f"Bearer {self.access_token(renew=stale)}"
            yield request


def make_auth(
    fhir_base: str,
    *,
    token: str | None = None,
    client_id: str | None = None,
    private_key_path: Path | str | None = None,
    token_url: str | None = None,
    scope: str | None = None,
    kid: str | None = None,
) -> httpx.Auth | None:
    """The auth the settings ask for: SMART when a client id and key are set, else a static
    token, else none (an open server)."""
    if client_id or private_key_path:
        if not (client_id and private_key_path):
            raise AuthError("SMART Backend Services needs both a client id and a private key")
        return SmartBackendAuth.from_key_file(
            fhir_base,
            client_id,
            private_key_path,
            token_url=token_url or None,
            scope=scope or DEFAULT_SCOPE,
            kid=kid or None,
        )
    if token:
        return BearerToken(token)
    return None
