"""Trust records in the database: which exact agent definitions someone allowed to run their code.

A record is in force until revoked (`TrustRecord.revoked_at`): by `revoke_trust` (`qmcp untrust`),
or by any write that changes the agent's stored definition (`revoke_trust_of`, in that write's
transaction). Only records in force count.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection, Sequence

from sqlalchemy.orm import Session
from sqlmodel import col, select

from ..models import TrustRecord, table_of
from ._database import Database, revoke_trust_of

__all__ = ["add_trust", "revoke_trust", "trust_history", "trusted_digests"]


async def trusted_digests(db: Database, digests: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of the (agent name, sha256) pairs have a trust record in force."""
    if not digests:
        return set()
    names = {name for name, _ in digests}
    query = select(TrustRecord.agent_name, TrustRecord.sha256).where(
        col(TrustRecord.agent_name).in_(names), col(TrustRecord.revoked_at).is_(None)
    )
    async with db.sessions() as session:
        rows = (await session.exec(query)).all()
    return {(name, digest) for name, digest in rows} & set(digests)


async def add_trust(db: Database, records: Sequence[TrustRecord]) -> None:
    """Store `records`: a definition trusted now keeps its first record (concurrent writers too); a
    revoked record of the same definition is put in force again, as this new decision."""
    if not records:
        return
    table = table_of(TrustRecord)

    def write(session: Session) -> None:
        dialect = session.get_bind().dialect.name
        insert = importlib.import_module(f"sqlalchemy.dialects.{dialect}").insert
        rows = [record.model_dump(exclude={"id"}) for record in records]
        statement = insert(table)
        statement = statement.on_conflict_do_update(
            index_elements=["agent_name", "sha256"],
            set_={
                "items": statement.excluded["items"],
                "trusted_by": statement.excluded.trusted_by,
                "via": statement.excluded.via,
                "trusted_at": statement.excluded.trusted_at,
                "revoked_at": None,
                "revoked_why": None,
            },
            where=table.c.revoked_at.is_not(None),
        )
        session.execute(statement, rows)

    await db._write(write)


async def revoke_trust(db: Database, names: Sequence[str], why: str) -> int:
    """Revoke every trust record in force of the agents `names` (`qmcp untrust`); returns how many."""
    return await db._write(lambda session: revoke_trust_of(session, names, why))


async def trust_history(db: Database, agent_name: str) -> list[TrustRecord]:
    """Every trust record of an agent name, revoked ones too, newest first."""
    query = (
        select(TrustRecord)
        .where(TrustRecord.agent_name == agent_name)
        .order_by(col(TrustRecord.trusted_at).desc(), col(TrustRecord.id).desc())
    )
    async with db.sessions() as session:
        return list((await session.exec(query)).all())
