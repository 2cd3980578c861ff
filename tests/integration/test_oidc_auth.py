"""gcp-mode authentication: GoogleOidcVerifier against a fake Google certificate endpoint.

The verification is google-auth's own (signature, expiry, audience) plus ours (issuer,
allowed and verified e-mail, certificate caching). Tokens are signed with google-auth's
RSASigner by a key whose certificate a loopback server publishes the way
https://www.googleapis.com/oauth2/v1/certs does: a JSON map of key id to PEM certificate.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt
from google.auth.exceptions import TransportError

from ctflow import auth, bootstrap
from ctflow.auth import GoogleOidcVerifier, Unauthorized
from ctflow.dataset_drop import drop_folder
from ctflow.settings import Settings
from tests.support import gcs_event_request, http_server, serving

AUDIENCE = "https://dataset-listener-123456.us-central1.run.app"
EVENTARC_AUDIENCE = "https://dataset-listener-abcdef-uc.a.run.app"  # the hash-style URL Eventarc may use
INVOKER = "ctflow-eventarc@demo.iam.gserviceaccount.com"
OTHER_ACCOUNT = "someone-else@demo.iam.gserviceaccount.com"


@dataclass
class Key:
    kid: str
    signer: crypt.RSASigner
    certificate_pem: str

    def sign(self, claims: dict[str, Any], kid: str | None = None) -> str:
        return jwt.encode(self.signer, claims, key_id=kid).decode()


def make_key(kid: str) -> Key:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "securetoken.test")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Key(
        kid, crypt.RSASigner.from_string(pem, key_id=kid), certificate.public_bytes(serialization.Encoding.PEM).decode()
    )


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    """`google` is published; `rotated` is published later by some tests; `stranger` never is."""
    return {"google": make_key("kid-1"), "rotated": make_key("kid-2"), "stranger": make_key("kid-1")}


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as resources:
        yield resources


@contextmanager
def authenticating(tmp_path: Path, pipelines_dir: Path | None, check: Any) -> Iterator[Any]:
    """Embedded Dependencies on a SQLite ledger whose services check callers with `check`, as in gcp mode."""
    settings = Settings(
        home=tmp_path / "home",
        database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        outbox_grace_seconds=0,
        **({"pipelines_dir": pipelines_dir} if pipelines_dir else {}),
    )
    embedded = bootstrap.build(settings)
    try:
        yield replace(embedded, authenticate=check)
    finally:
        embedded.ledger.dispose()


def dropped(deps: Any, digits_folder: Path) -> tuple[dict[str, str], bytes]:
    """A digits dataset version dropped in the bucket, and the GCS event of its commit marker."""
    drop_folder(digits_folder, deps.pipelines.get("digits"), deps.blobs, "v1")
    return gcs_event_request(deps.settings.bucket_dir, "datasets/digits/v1/_MANIFEST.json")


@dataclass
class CertsEndpoint:
    url: str
    published: dict[str, str] = field(default_factory=dict)
    fetches: int = 0
    status: int = 200

    def publish(self, *published: Key) -> None:
        self.published = {k.kid: k.certificate_pem for k in published}


@pytest.fixture
def certs(keys: dict[str, Key]) -> Iterator[CertsEndpoint]:
    """A loopback stand-in for Google's v1 certs endpoint, counting fetches."""
    endpoint = CertsEndpoint(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            endpoint.fetches += 1
            body = json.dumps(endpoint.published).encode()
            self.send_response(endpoint.status)
            self.send_header("content-type", "application/json; charset=UTF-8")
            self.send_header("cache-control", "public, max-age=600, must-revalidate, no-transform")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with http_server(Handler) as base:
        endpoint.url = f"{base}/oauth2/v1/certs"
        endpoint.publish(keys["google"])
        yield endpoint


@pytest.fixture
def verifier(certs: CertsEndpoint) -> GoogleOidcVerifier:
    return GoogleOidcVerifier(f"{AUDIENCE}, {EVENTARC_AUDIENCE}", [INVOKER], certs_url=certs.url)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The verifier's monotonic clock (for certificate caching), moved by hand."""
    now = [1000.0]
    monkeypatch.setattr(auth, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


def claims(**overrides: Any) -> dict[str, Any]:
    """What a Google-minted ID token for a service account carries."""
    now = int(time.time())
    base = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "azp": "1234567890",
        "sub": "1234567890",
        "email": INVOKER,
        "email_verified": True,
        "iat": now,
        "exp": now + 3600,
    }
    return {k: v for k, v in {**base, **overrides}.items() if v is not None}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rejects(verifier: GoogleOidcVerifier, headers: dict[str, str], match: str) -> str:
    with pytest.raises(Unauthorized, match=match) as caught:
        verifier(headers)
    message = str(caught.value)
    token = headers.get("Authorization", "").partition(" ")[2].strip()
    for part in [token, *token.split(".")]:
        assert len(part) < 8 or part not in message, "the error message quotes the token"
    return message


@pytest.mark.parametrize(
    "overrides",
    [{}, {"iss": "accounts.google.com"}, {"aud": EVENTARC_AUDIENCE}, {"iat": int(time.time()) + 30}],
    ids=["plain", "bare-issuer", "second-audience", "iat-within-clock-skew"],
)
def test_valid_token_from_an_allowed_account_is_accepted(verifier, keys, overrides):
    verifier(bearer(keys["google"].sign(claims(**overrides))))
    verifier({"authorization": f"bearer  {keys['google'].sign(claims(**overrides))} "})  # case, spaces


def _expired() -> dict[str, Any]:
    now = int(time.time())
    return claims(iat=now - 7200, exp=now - 3600)


@pytest.mark.parametrize(
    ("token", "match"),
    [
        (lambda k: k["google"].sign(claims(aud="https://other-service.run.app")), "wrong audience"),
        (lambda k: k["google"].sign(claims(email=OTHER_ACCOUNT)), f"'{OTHER_ACCOUNT}' is not an allowed invoker"),
        (lambda k: k["google"].sign(claims(email=None)), "None is not an allowed invoker"),
        (lambda k: k["google"].sign(claims(email_verified=False)), "no verified e-mail"),
        (lambda k: k["google"].sign(claims(email_verified="false")), "no verified e-mail"),
        (lambda k: k["google"].sign(claims(email_verified=None)), "no verified e-mail"),
        (lambda k: k["google"].sign(_expired()), "expired"),
        (lambda k: k["google"].sign(claims(iat=int(time.time()) + 600)), "too early"),
        (lambda k: k["google"].sign(claims(exp=None)), "required claim exp"),
        (lambda k: k["google"].sign(claims(iss="https://evil.example.com")), "issuer 'https://evil.example.com'"),
        (lambda k: k["google"].sign(claims(iss=None)), "issuer None"),
        (lambda k: k["stranger"].sign(claims()), "Could not verify token signature"),
        (lambda k: k["rotated"].sign(claims()), "key id kid-2 not found"),
        (lambda k: k["google"].sign(claims(), kid="kid-unknown"), "key id kid-unknown not found"),
    ],
    ids=[
        "wrong-audience",
        "not-allowed-account",
        "no-email",
        "email-not-verified",
        "email-verified-string-false",
        "no-email-verified",
        "expired",
        "issued-in-the-future",
        "no-exp",
        "wrong-issuer",
        "no-issuer",
        "bad-signature",
        "unpublished-key",
        "unknown-kid",
    ],
)
def test_bad_tokens_are_unauthorized(verifier, keys, token, match):
    rejects(verifier, bearer(token(keys)), match)


def test_a_tampered_payload_fails_the_signature_check(verifier, keys):
    header, _, signature = keys["google"].sign(claims(email=OTHER_ACCOUNT)).split(".")
    _, payload, _ = keys["google"].sign(claims()).split(".")
    rejects(verifier, bearer(f"{header}.{payload}.{signature}"), "Could not verify token signature")


def test_unsigned_tokens_are_unauthorized(verifier):
    unsigned = (
        b".".join(
            jwt._helpers.unpadded_urlsafe_b64encode(json.dumps(part).encode())
            for part in ({"alg": "none", "typ": "JWT"}, claims())
        )
        + b"."
    )
    rejects(verifier, bearer(unsigned.decode()), "Unsupported signature algorithm none")


@pytest.mark.parametrize(
    ("headers", "match"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": ""}, "missing bearer token"),
        ({"Authorization": "Bearer"}, "missing bearer token"),
        ({"Authorization": "Bearer   "}, "missing bearer token"),
        ({"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}, "missing bearer token"),
        ({"Authorization": "eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl"}, "missing bearer token"),
        ({"Authorization": "Bearer not-a-jwt-but-a-long-secret"}, "^malformed bearer token$"),
        ({"Authorization": "Bearer only.twosegments-secret"}, "^malformed bearer token$"),
        ({"Authorization": "Bearer eyJub3QganNvbg.eyJzZWNyZXQiOiAic2VjcmV0In0.c2ln"}, "^malformed bearer token$"),
        ({"Authorization": "Bearer W10.W10.c2ln"}, "^malformed bearer token$"),  # JSON, but not objects
        ({"Authorization": "Bearer !!!.@@@.###"}, "^malformed bearer token$"),
    ],
    ids=[
        "absent",
        "empty",
        "bearer-alone",
        "bearer-blank",
        "basic",
        "no-scheme",
        "no-dots",
        "two-segments",
        "header-not-json",
        "segments-not-objects",
        "not-base64",
    ],
)
def test_missing_or_garbled_authorization_is_unauthorized(verifier, certs, headers, match):
    rejects(verifier, headers, match)
    assert certs.fetches == 0, "a request without a parsable token must not make us fetch certificates"


def test_certificates_are_fetched_once_and_kept_for_their_max_age(verifier, certs, keys, clock):
    for _ in range(20):
        verifier(bearer(keys["google"].sign(claims())))
    assert certs.fetches == 1
    clock[0] += 599
    verifier(bearer(keys["google"].sign(claims())))
    assert certs.fetches == 1
    clock[0] += 2  # past Cache-Control max-age=600
    verifier(bearer(keys["google"].sign(claims())))
    assert certs.fetches == 2


def test_a_rotated_key_is_picked_up_but_unknown_kids_cannot_force_refetches(verifier, certs, keys, clock):
    verifier(bearer(keys["google"].sign(claims())))
    certs.publish(keys["google"], keys["rotated"])  # Google starts signing with a new key
    for _ in range(5):  # within unknown_kid_refetch_seconds of the last fetch: the cache answers
        rejects(verifier, bearer(keys["rotated"].sign(claims())), "key id kid-2 not found")
    assert certs.fetches == 1
    clock[0] += verifier.unknown_kid_refetch_seconds
    verifier(bearer(keys["rotated"].sign(claims())))
    verifier(bearer(keys["google"].sign(claims())))
    assert certs.fetches == 2


def test_an_unreachable_certificate_endpoint_is_an_error_not_a_bad_token(verifier, certs, keys):
    """A token that could not be checked is not a bad token: the service answers 503 (the sender retries)."""
    certs.status = 503
    with pytest.raises(TransportError, match="HTTP 503"):
        verifier(bearer(keys["google"].sign(claims())))
    certs.status = 200
    verifier(bearer(keys["google"].sign(claims())))  # and the failure was not cached


@pytest.mark.parametrize("audience", [None, "", " , "])
def test_a_verifier_without_an_audience_is_refused(audience):
    """google-auth skips the audience check for audience=None; we refuse to be built that way."""
    with pytest.raises(ValueError, match="CTFLOW_OIDC_AUDIENCE"):
        GoogleOidcVerifier(audience, [INVOKER])


def test_service_in_gcp_auth_mode_needs_a_valid_token_on_post_but_not_on_healthz(
    tmp_path: Path, pipelines_dir: Path, digits_folder: Path, verifier, keys, certs, stack
):
    """dataset-listener over real HTTP, its Dependencies authenticating as in gcp mode."""
    from dataset_listener import app as listener

    deps = stack.enter_context(authenticating(tmp_path, pipelines_dir, verifier))
    headers, body = dropped(deps, digits_folder)
    with serving(listener.create_app(lambda: deps)) as url, httpx.Client(base_url=url, timeout=30) as http:
        health = http.get("/healthz")  # Cloud Run's startup probe carries no token
        assert health.status_code == 200 and health.json()["status"] == "ok"

        certs.status = 503  # Google's certificates cannot be fetched: "retry later", not "unauthorized"
        answer = http.post("/", content=body, headers={**headers, **bearer(keys["google"].sign(claims()))})
        assert answer.status_code == 503, answer.text
        certs.status = 200

        for attempt in [
            {},
            {"Authorization": "Bearer garbage"},
            bearer(keys["google"].sign(claims(aud="https://other.run.app"))),
            bearer(keys["google"].sign(claims(email=OTHER_ACCOUNT))),
            bearer(keys["stranger"].sign(claims())),
        ]:
            answer = http.post("/", content=body, headers={**headers, **attempt})
            assert answer.status_code == 401, answer.text
            assert "error" in answer.json()
        assert http.post("/reconcile", headers=bearer("x.y.z")).status_code == 401
        assert http.post("/reconcile").status_code == 401

        token = keys["google"].sign(claims(aud=EVENTARC_AUDIENCE))
        answer = http.post("/", content=body, headers={**headers, **bearer(token)})
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "processed"
        assert http.post("/reconcile", headers=bearer(token)).status_code == 200


# ---- behind Cloud Run IAM: the token arrives without its signature --------------------------------------


def forwarded(token: str) -> str:
    """The token as Cloud Run IAM forwards it to the service once it has verified it."""
    header, payload, _ = token.split(".")
    return f"{header}.{payload}.{auth.SIGNATURE_REMOVED}"


@pytest.fixture
def behind_iam(verifier: GoogleOidcVerifier) -> auth.CloudRunIamChecker:
    return auth.CloudRunIamChecker(verifier)


def test_behind_cloud_run_iam_a_forwarded_token_is_checked_by_its_claims(behind_iam, keys, certs):
    fetches = certs.fetches
    for key in ("google", "stranger"):  # Google verified the signature; what is left of it is not checked again
        token = forwarded(keys[key].sign(claims()))
        behind_iam(bearer(token))
        behind_iam({"X-Serverless-Authorization": f"Bearer {token}", "Authorization": "Bearer app-own-token"})
    behind_iam(bearer(forwarded(keys["google"].sign(claims(aud=EVENTARC_AUDIENCE)))))
    assert certs.fetches == fetches  # no certificate fetch for a forwarded token


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"aud": "https://other-service.run.app"}, "audience 'https://other-service.run.app' is not this service's"),
        ({"email": OTHER_ACCOUNT}, f"'{OTHER_ACCOUNT}' is not an allowed invoker"),
        ({"email_verified": False}, "no verified e-mail"),
        ({"iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}, "expired"),
        ({"exp": None}, "no expiry"),
        ({"iat": int(time.time()) + 600}, "too early"),
        ({"iss": "https://evil.example.com"}, "issuer 'https://evil.example.com'"),
    ],
    ids=["wrong-audience", "wrong-account", "unverified-email", "expired", "no-exp", "future-iat", "wrong-issuer"],
)
def test_behind_cloud_run_iam_bad_claims_are_unauthorized(behind_iam, keys, changes, match):
    rejects(behind_iam, bearer(forwarded(keys["google"].sign(claims(**changes)))), match)


def test_behind_cloud_run_iam_a_token_that_kept_its_signature_is_verified_in_full(behind_iam, keys, verifier):
    behind_iam(bearer(keys["google"].sign(claims())))  # a real signature: verified, and good
    rejects(behind_iam, bearer(keys["stranger"].sign(claims())), "Could not verify token signature")
    rejects(behind_iam, {}, "missing bearer token")
    rejects(behind_iam, bearer("only.two"), "malformed bearer token")
    # Without Cloud Run IAM in front (verify_signature), a forwarded token cannot pass.
    rejects(verifier, bearer(forwarded(keys["google"].sign(claims()))), "invalid token")


def test_the_auth_mode_is_one_setting_checked_at_start():
    from pydantic import ValidationError

    gcp = {
        "mode": "gcp",
        "gcp_project": "p",
        "bucket": "b",
        "database_url": "sqlite://",
        "oidc_audience": AUDIENCE,
        "allowed_invokers": [INVOKER],
    }
    assert Settings(**gcp).auth_mode == "cloud_run_iam"
    with pytest.raises(ValidationError, match="auth_mode"):
        Settings(**gcp, auth_mode="trust-everyone")
    assert isinstance(auth.authenticator("cloud_run_iam", AUDIENCE, [INVOKER]), auth.CloudRunIamChecker)
    assert isinstance(auth.authenticator("verify_signature", AUDIENCE, [INVOKER]), GoogleOidcVerifier)


def test_a_service_behind_cloud_run_iam_takes_the_forwarded_token_and_logs_no_token(
    tmp_path: Path, pipelines_dir: Path, digits_folder: Path, behind_iam, keys, caplog, stack
):
    """dataset-listener over real HTTP as Cloud Run delivers Eventarc's request: the forwarded token in
    Authorization, Google's headers beside it."""
    from dataset_listener import app as listener

    deps = stack.enter_context(authenticating(tmp_path, pipelines_dir, behind_iam))
    headers, body = dropped(deps, digits_folder)
    google = {"X-Cloud-Trace-Context": "0123456789abcdef0123456789abcdef/1;o=1", "X-Forwarded-Proto": "https"}
    good = forwarded(keys["google"].sign(claims(aud=EVENTARC_AUDIENCE)))
    bad = [
        forwarded(keys["google"].sign(claims(aud="https://other.run.app"))),
        forwarded(keys["google"].sign(claims(email=OTHER_ACCOUNT))),
        forwarded(keys["google"].sign(claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600))),
    ]
    with serving(listener.create_app(lambda: deps)) as url, httpx.Client(base_url=url, timeout=30) as http:
        for token in bad:
            answer = http.post("/", content=body, headers={**headers, **google, **bearer(token)})
            assert answer.status_code == 401, answer.text
        assert http.post("/", content=body, headers={**headers, **google}).status_code == 401
        answer = http.post("/", content=body, headers={**headers, **google, **bearer(good)})
        assert answer.status_code == 200 and answer.json()["status"] == "processed", answer.text
        assert http.post("/reconcile", headers=bearer(good)).status_code == 200
    logged = caplog.text
    for token in [good, *bad]:
        assert token.split(".")[1] not in logged  # no log line carries a token (nor its claims segment)


def test_every_status_api_route_but_healthz_needs_an_allowed_caller(tmp_path: Path, behind_iam, keys, stack):
    """The status API in gcp mode: each route of its routers refuses a missing or wrong token (401) and
    answers a forwarded good one; the startup probe (/healthz) needs none."""
    from status_api import app as status_api

    deps = stack.enter_context(authenticating(tmp_path, None, behind_iam))
    app = status_api.create_app(lambda: deps)
    routes = sorted(
        (method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item if path != "/healthz"
    )
    assert ("GET", "/runs") in routes and ("POST", "/rollouts/{rollout_id}/{command}") in routes
    good = bearer(forwarded(keys["google"].sign(claims())))
    wrong = bearer(forwarded(keys["google"].sign(claims(email=OTHER_ACCOUNT))))
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/healthz").status_code == 200
        for method, path in routes:
            concrete = path.format(
                run_id="r1", letter_id="1", rollout_id="digits-production-v1", command="pause", pipeline="digits"
            )
            for headers in ({}, wrong):
                answer = http.request(method, concrete, headers=headers)
                assert answer.status_code == 401, (method, concrete, answer.status_code, answer.text)
            answer = http.request(method, concrete, headers=good)
            assert answer.status_code != 401, (method, concrete, answer.text)
        assert http.get("/runs", headers=good).status_code == 200
