"""Who may call an event endpoint.

gcp mode: every request carries a Google-signed OIDC token (Pub/Sub push, Eventarc and
Cloud Scheduler all send one) whose audience and service-account email we check.
Embedded mode binds loopback only and needs no token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class Unauthorized(Exception):
    pass


def allow_loopback(headers: Mapping[str, str]) -> None:
    """Embedded mode: the listener is bound to loopback, so the network already limits callers."""


class GoogleOidcVerifier:
    def __init__(self, audience: str | None, allowed: Sequence[str], certs_url: str | None = None) -> None:
        self.audience = audience
        self.allowed = frozenset(allowed)
        self.certs_url = certs_url
        self._request: Any = None

    def __call__(self, headers: Mapping[str, str]) -> None:
        from google.auth.transport import requests as google_requests
        from google.oauth2 import id_token

        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("missing bearer token")
        if self._request is None:
            self._request = google_requests.Request()
        try:
            kwargs = {"certs_url": self.certs_url} if self.certs_url else {}
            claims = id_token.verify_token(token, self._request, audience=self.audience, **kwargs)
        except ValueError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        if not claims.get("email_verified") or claims.get("email") not in self.allowed:
            raise Unauthorized(f"caller {claims.get('email')!r} is not an allowed invoker")


def no_invoker_headers(url: str) -> dict[str, str]:
    return {}


def google_invoker_headers(url: str) -> dict[str, str]:
    """An ID token for the target Cloud Run service, from this service's own identity."""
    from google.auth.transport import requests as google_requests
    from google.oauth2 import id_token

    audience = url.rstrip("/")
    return {"Authorization": f"Bearer {id_token.fetch_id_token(google_requests.Request(), audience)}"}
