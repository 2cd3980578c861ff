"""Leases: who may do a piece of long work right now, and until when.

Long work (launching a run's job, evaluating a model, driving a rollout) runs outside
any ledger transaction, from an after-commit action or from a reconcile tick finishing
what a crash interrupted. Whoever does it first claims a lease named for the work, in
a short transaction; while a live holder has it, nobody else can claim it. A holder
that died is taken over once its lease expires, so a lease outlives any sane piece of
work. Whatever the holder then writes is fenced: it checks `holds` in the transaction
that writes the result (under the lease row's lock), so a late holder whose lease was
taken over writes nothing.

A claim is one statement on both databases (INSERT ... ON CONFLICT DO UPDATE ... WHERE
the lease is free or expired), so two claimants racing for a lease cannot both win.
The row counts its claims: the guarded work's attempts.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from .sql import dialect_insert, dialect_of, execute
from .tables import LeaseRow, table_of, utcnow

_LEASES = table_of(LeaseRow)
_C = _LEASES.c


@dataclass(frozen=True)
class Lease:
    """A claimed lease: its holder's token proves who claimed it."""

    name: str
    token: str
    expires_at: datetime
    claims: int  # including this one: 1 on the first attempt at the work


@dataclass(frozen=True)
class LeaseState:
    """What the ledger holds about a lease (for reading, not for acting on)."""

    name: str
    held: bool  # a holder has it and it has not expired
    expires_at: datetime | None
    claims: int


def claim(tx: Session, name: str, *, duration: timedelta, now: datetime | None = None) -> Lease | None:
    """Take the lease for `duration`; None while someone else holds it and it has not expired."""
    now = now or utcnow()
    token, expires_at = uuid.uuid4().hex, now + duration
    taken = (
        dialect_insert(dialect_of(tx), _LEASES)
        .values(name=name, holder=token, expires_at=expires_at, claims=1, claimed_at=now)
        .on_conflict_do_update(
            index_elements=[_C.name],
            set_={"holder": token, "expires_at": expires_at, "claims": _C.claims + 1, "claimed_at": now},
            where=or_(_C.holder.is_(None), _C.expires_at <= now),
        )
        .returning(_C.claims)
    )
    row = execute(tx, taken).first()
    return Lease(name, token, expires_at, int(row[0])) if row else None


def holds(tx: Session, lease: Lease) -> bool:
    """Whether `lease` is still its holder's, locking the lease row until `tx` ends (the fence).

    A holder past its expiry still holds the lease until someone claims it.
    """
    holder = execute(tx, select(_C.holder).where(_C.name == lease.name).with_for_update()).scalar_one_or_none()
    return holder == lease.token


def renew(tx: Session, lease: Lease, *, duration: timedelta, now: datetime | None = None) -> Lease | None:
    """Extend a lease its holder still has; None when it was taken over (stop working)."""
    expires_at = (now or utcnow()) + duration
    renewed = execute(
        tx,
        update(_LEASES)
        .where(_C.name == lease.name, _C.holder == lease.token)
        .values(expires_at=expires_at)
        .returning(_C.claims),
    ).first()
    return Lease(lease.name, lease.token, expires_at, lease.claims) if renewed else None


def release(tx: Session, lease: Lease) -> bool:
    """Give the lease back, so the next claim need not wait for it to expire; False if it was not ours."""
    released = execute(
        tx,
        update(_LEASES)
        .where(_C.name == lease.name, _C.holder == lease.token)
        .values(holder=None, expires_at=None)
        .returning(_C.name),
    ).first()
    return released is not None


def forget(tx: Session, name: str) -> None:
    """The work is done: drop the lease and its claim count (a late holder is fenced off)."""
    execute(tx, delete(_LEASES).where(_C.name == name))


def state(tx: Session, name: str, *, now: datetime | None = None) -> LeaseState | None:
    row = execute(tx, select(_C.holder, _C.expires_at, _C.claims).where(_C.name == name)).first()
    if row is None:
        return None
    holder, expires_at, claims = row
    live = holder is not None and expires_at is not None and expires_at > (now or utcnow())
    return LeaseState(name, live, expires_at, int(claims))
