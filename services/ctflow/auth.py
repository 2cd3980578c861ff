"""Who may call an event endpoint.

gcp mode: every request carries a Google-signed OIDC token (Pub/Sub push, Eventarc and
Cloud Scheduler all send one) whose audience and service-account email we check.
Embedded mode binds loopback only and needs no token: its Dependencies carry no
authenticator (`authenticate` is None).

Two ways, one setting (`CTFLOW_AUTH_MODE`):

- `cloud_run_iam` (the deployed default): Cloud Run IAM has verified the token before the
  request reaches the service and forwards it with its signature replaced by
  `SIGNATURE_REMOVED_BY_GOOGLE` (in `X-Serverless-Authorization` when the caller used it,
  else in `Authorization`). Verifying that signature again can only fail, so such a token's
  claims are checked (issuer, audience, allowed and verified e-mail, expiry) and its
  signature is not. A token that still carries a signature did not come through that
  rewrite and is verified in full. Safe only where Cloud Run IAM is enforced on the service
  (no `allUsers` invoker, invoker IAM check on), as Terraform deploys it.
- `verify_signature`: every token is verified against Google's certificates.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"  # {key id: PEM certificate}
GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
SIGNATURE_REMOVED = "SIGNATURE_REMOVED_BY_GOOGLE"  # what Cloud Run IAM leaves of a verified token's signature


class Unauthorized(Exception):
    pass


class GoogleOidcVerifier:
    """Accepts a request whose bearer token is a Google-signed ID token, unexpired, issued by
    accounts.google.com for one of `audience` (a list, or a comma-separated string), carrying
    a verified e-mail in `allowed`.

    Google's certificates are cached for their Cache-Control max-age; a token signed with a
    key id the cache does not know refetches them (at most every `unknown_kid_refetch_seconds`).
    """

    clock_skew_seconds = 60
    default_certs_ttl_seconds = 300.0
    unknown_kid_refetch_seconds = 30.0
    fetch_timeout_seconds = 10.0

    def __init__(
        self, audience: str | Sequence[str] | None, allowed: Sequence[str], certs_url: str | None = None
    ) -> None:
        audiences = audience.split(",") if isinstance(audience, str) else audience or ()
        self.audiences = [a.strip() for a in audiences if a.strip()]
        if not self.audiences:  # google-auth would skip the audience check altogether
            raise ValueError("gcp mode needs CTFLOW_OIDC_AUDIENCE (the audience callers mint tokens for)")
        self.allowed = frozenset(allowed)
        self.certs_url = certs_url or GOOGLE_CERTS_URL
        self._request: Any = None
        self._certs: dict[str, str] = {}
        self._fetched_at = self._expires_at = float("-inf")
        self._lock = threading.Lock()

    def __call__(self, headers: Mapping[str, str]) -> None:
        from google.auth import jwt

        token = bearer_token(headers, "authorization")
        try:
            kid = jwt.decode_header(token).get("kid")
        except ValueError:  # google-auth's message would quote the token
            raise Unauthorized("malformed bearer token") from None
        certs = self._certs_for(kid)
        try:
            claims = jwt.decode(
                token, certs=certs, audience=self.audiences, clock_skew_in_seconds=self.clock_skew_seconds
            )
        except ValueError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        check_caller(claims, self.allowed)

    def _certs_for(self, kid: object) -> dict[str, str]:
        with self._lock:
            now = time.monotonic()
            unknown = isinstance(kid, str) and kid not in self._certs
            if now >= self._expires_at or (unknown and now - self._fetched_at >= self.unknown_kid_refetch_seconds):
                self._certs, ttl = self._fetch()
                self._fetched_at, self._expires_at = now, now + ttl
            return self._certs

    def _fetch(self) -> tuple[dict[str, str], float]:
        from google.auth.exceptions import TransportError
        from google.auth.transport import requests as google_requests

        if self._request is None:
            self._request = google_requests.Request()
        response = self._request(self.certs_url, method="GET", timeout=self.fetch_timeout_seconds)
        try:
            certs = json.loads(response.data) if response.status == 200 else None
        except ValueError:
            certs = None
        if not isinstance(certs, dict) or "keys" in certs:
            raise TransportError(f"no {{key id: certificate}} map at {self.certs_url} (HTTP {response.status})")
        max_age = re.search(r"\bmax-age=(\d+)", response.headers.get("cache-control", ""))
        return certs, float(max_age.group(1)) if max_age else self.default_certs_ttl_seconds


class CloudRunIamChecker:
    """Behind Cloud Run IAM: a forwarded token (signature removed by Google) has its claims checked; a token
    that still carries a signature is verified in full by `verifier`."""

    def __init__(self, verifier: GoogleOidcVerifier) -> None:
        self.verifier = verifier

    def __call__(self, headers: Mapping[str, str]) -> None:
        from google.auth import jwt

        header = "x-serverless-authorization" if _header(headers, "x-serverless-authorization") else "authorization"
        token = bearer_token(headers, header)
        parts = token.split(".")
        if len(parts) != 3 or parts[2] != SIGNATURE_REMOVED:
            self.verifier({"authorization": f"Bearer {token}"})
            return
        try:
            claims = jwt.decode(token, verify=False)
        except ValueError:
            raise Unauthorized("malformed bearer token") from None
        skew, now = self.verifier.clock_skew_seconds, time.time()
        if claims.get("aud") not in self.verifier.audiences:
            raise Unauthorized(f"token audience {claims.get('aud')!r} is not this service's")
        expires, issued = claims.get("exp"), claims.get("iat")
        if not isinstance(expires, int | float) or now > expires + skew:
            raise Unauthorized("token expired" if isinstance(expires, int | float) else "token has no expiry")
        if not isinstance(issued, int | float) or issued > now + skew:
            raise Unauthorized("token used too early" if isinstance(issued, int | float) else "token has no iat")
        check_caller(claims, self.verifier.allowed)


def bearer_token(headers: Mapping[str, str], name: str) -> str:
    scheme, _, token = _header(headers, name).strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing bearer token")
    return token


def check_caller(claims: Mapping[str, Any], allowed: frozenset[str]) -> None:
    """Issued by Google, to an allowed service account with a verified e-mail."""
    if claims.get("iss") not in GOOGLE_ISSUERS:
        raise Unauthorized(f"token issuer {claims.get('iss')!r} is not Google")
    email = claims.get("email")
    if not isinstance(email, str) or email not in allowed:
        raise Unauthorized(f"caller {email!r} is not an allowed invoker")
    if claims.get("email_verified") not in (True, "true"):
        raise Unauthorized(f"caller {email!r} has no verified e-mail")


def _header(headers: Mapping[str, str], name: str) -> str:
    return next((v for k, v in headers.items() if k.lower() == name), "")


def authenticator(mode: str, audience: str | Sequence[str] | None, allowed: Sequence[str]) -> Any:
    """The check for gcp mode's `CTFLOW_AUTH_MODE`."""
    verifier = GoogleOidcVerifier(audience, allowed)
    return CloudRunIamChecker(verifier) if mode == "cloud_run_iam" else verifier


def no_invoker_headers(url: str) -> dict[str, str]:
    return {}


def google_invoker_headers(url: str) -> dict[str, str]:
    """An ID token for the target Cloud Run service, from this service's own identity."""
    from google.auth.transport import requests as google_requests
    from google.oauth2 import id_token

    audience = url.rstrip("/")
    return {"Authorization": f"Bearer {id_token.fetch_id_token(google_requests.Request(), audience)}"}
