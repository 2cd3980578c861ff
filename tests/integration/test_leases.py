"""The ledger's one lease mechanism (ctflow.ledger.leases) on SQLite and PostgreSQL: claim, renew, expire,
release, and the fence that keeps a late holder from writing."""

from __future__ import annotations

import threading
from datetime import timedelta

from ctflow.ledger import Ledger, leases
from ctflow.ledger.tables import utcnow

MINUTE = timedelta(minutes=1)


def _ledger(ledger_url: str) -> Ledger:
    ledger = Ledger(ledger_url)
    ledger.migrate()
    return ledger


def test_a_held_lease_cannot_be_claimed_until_it_expires_and_then_its_holder_is_fenced(ledger_url):
    """The second claimant waits out the expiry; the first holder's token no longer holds."""
    ledger = _ledger(ledger_url)
    now = utcnow()
    with ledger.transaction() as tx:
        first = leases.claim(tx, "launch:r1", duration=MINUTE, now=now)
    with ledger.transaction() as tx:
        assert leases.claim(tx, "launch:r1", duration=MINUTE, now=now + timedelta(seconds=59)) is None
        assert leases.holds(tx, first)
    with ledger.transaction() as tx:
        second = leases.claim(tx, "launch:r1", duration=MINUTE, now=now + timedelta(seconds=61))
    assert first is not None and second is not None and first.claims == 1 and second.claims == 2
    with ledger.transaction() as tx:
        assert not leases.holds(tx, first) and leases.holds(tx, second)
        assert leases.renew(tx, first, duration=MINUTE) is None
        assert not leases.release(tx, first)
    ledger.dispose()


def test_released_lease_is_claimed_at_once_and_keeps_counting_claims(ledger_url):
    """Giving a lease back after a failure lets the retry start now; the claim count is the attempt number."""
    ledger = _ledger(ledger_url)
    with ledger.transaction() as tx:
        first = leases.claim(tx, "evaluate:r1", duration=MINUTE)
        assert first is not None and leases.release(tx, first)
    with ledger.transaction() as tx:
        again = leases.claim(tx, "evaluate:r1", duration=MINUTE)
        assert again is not None and again.claims == 2
        state = leases.state(tx, "evaluate:r1")
        assert state is not None and state.held and state.claims == 2
        leases.forget(tx, "evaluate:r1")
        assert not leases.holds(tx, again) and leases.state(tx, "evaluate:r1") is None
    ledger.dispose()


def test_renewing_moves_the_expiry(ledger_url):
    """A renewed lease is not taken over at its first expiry."""
    ledger = _ledger(ledger_url)
    now = utcnow()
    with ledger.transaction() as tx:
        held = leases.claim(tx, "rollout:x", duration=MINUTE, now=now)
        assert held is not None
        renewed = leases.renew(tx, held, duration=MINUTE, now=now + timedelta(seconds=50))
    assert renewed is not None and renewed.expires_at == now + timedelta(seconds=110)
    with ledger.transaction() as tx:
        assert leases.claim(tx, "rollout:x", duration=MINUTE, now=now + timedelta(seconds=90)) is None
    ledger.dispose()


def test_concurrent_claims_have_one_winner(ledger_url):
    """Eight threads claim one free lease at once (new row and expired row alike): exactly one gets it."""
    ledger = _ledger(ledger_url)

    def contend(start: threading.Barrier, won: list[str], round_: str) -> None:
        start.wait()
        with ledger.transaction() as tx:
            if leases.claim(tx, "launch:race", duration=timedelta(seconds=2)) is not None:
                won.append(round_)

    for round_ in ("new", "expired"):
        start, won = threading.Barrier(8), []
        if round_ == "expired":
            threading.Event().wait(2.1)  # the first round's lease has expired by now
        threads = [threading.Thread(target=contend, args=(start, won, round_)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert won == [round_], f"{round_}: {len(won)} winners"
    ledger.dispose()
