"""Dead letters: what could not be processed and why; replay once the cause is fixed.

Replay sends the stored request back to the service that rejected it, marked with the
dead letter's id; that service reprocesses it through its normal intake.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from starlette.concurrency import run_in_threadpool

from ctflow.service import REPLAY_HEADER

from .deps import DepsDep, LedgerText, found, read_ledger
from .views import dead_letter

if TYPE_CHECKING:  # not at start-up: the ledger's libraries load with the first request (cold start)
    from sqlalchemy.orm import Session

    from ctflow.deps import Dependencies

router = APIRouter(prefix="/dead-letters", tags=["dead letters"])


@router.get("")
async def list_dead_letters(
    deps: DepsDep,
    status: Literal["open", "replayed"] | None = None,
    consumer: LedgerText | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict]:
    """Dead letters, newest first, with the reason each was rejected."""
    from ctflow.ledger import dead_letters

    return await read_ledger(
        deps,
        lambda session: [
            dead_letter(d, with_request=False)
            for d in dead_letters.listing(session, consumer=consumer, status=status, limit=limit)
        ],
    )


@router.get("/{letter_id}")
async def get_dead_letter(letter_id: LedgerText, deps: DepsDep) -> dict:
    """One dead letter with the full request as it was received."""
    from ctflow.ledger import dead_letters

    def read(session: Session) -> dict | None:
        letter = dead_letters.get(session, letter_id)
        return dead_letter(letter, with_request=True) if letter else None

    return found(await read_ledger(deps, read), f"dead letter {letter_id!r}")


@router.post("/{letter_id}/replay")
async def replay(letter_id: LedgerText, deps: DepsDep) -> dict:
    """Send the stored request to its service again; the answer says whether it now went through."""
    letter = await get_dead_letter(letter_id, deps)
    if letter["status"] != "open":
        raise HTTPException(409, f"dead letter {letter_id} was already replayed")
    consumer, request = letter["consumer"], letter["request"]
    url = deps.settings.service_urls.get(consumer)
    if not url:
        raise HTTPException(503, f"no URL configured for service {consumer!r} (CTFLOW_SERVICE_URLS)")
    return await run_in_threadpool(_replay_once, deps, url, letter_id, consumer, request)


def _replay_once(deps: Dependencies, url: str, letter_id: str, consumer: str, request: dict) -> dict:
    """Resend under the letter's replay lease: concurrent replays of one letter are refused, not raced,
    and the service honours the replay marker only while this lease is held (ledger.dead_letters)."""
    from datetime import timedelta

    from ctflow.ledger import dead_letters, leases

    with deps.ledger.transaction() as tx:
        letter = dead_letters.get(tx, letter_id)
        if letter is None or letter.status != "open":
            raise HTTPException(409, f"dead letter {letter_id} was already replayed")
        lease = leases.claim(
            tx, dead_letters.replay_lease(letter_id), duration=timedelta(seconds=dead_letters.REPLAY_SECONDS)
        )
    if lease is None:
        raise HTTPException(409, f"dead letter {letter_id} is being replayed right now")
    try:
        return _resend(deps, url, letter_id, consumer, request)
    finally:
        with deps.ledger.transaction() as tx:
            leases.forget(tx, lease.name)


def _resend(deps: Dependencies, url: str, letter_id: str, consumer: str, request: dict) -> dict:
    import httpx

    from ctflow.ledger.dead_letters import request_body

    headers = {k: v for k, v in request["headers"].items() if k not in ("content-length", "host")}
    headers.update({REPLAY_HEADER: letter_id, **deps.invoker_headers(url)})
    try:
        response = httpx.post(url.rstrip("/") + "/", content=request_body(request), headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        raise HTTPException(502, f"{consumer} did not answer: {exc}") from None
    if response.status_code >= 300:
        raise HTTPException(502, f"{consumer} answered {response.status_code}: {response.text[:500]}")
    return {"dead_letter_id": letter_id, "service": consumer, "result": response.json()}
