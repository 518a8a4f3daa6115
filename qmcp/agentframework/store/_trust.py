"""Trust records in the database: which exact agent definitions someone allowed to run their code."""

from __future__ import annotations

import importlib
from collections.abc import Collection, Sequence

from sqlalchemy.orm import Session
from sqlmodel import col, select

from ..models import TrustRecord, table_of
from ._database import Database

__all__ = ["add_trust", "trust_history", "trusted_digests"]


async def trusted_digests(db: Database, digests: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of the (agent name, sha256) pairs have been trusted."""
    if not digests:
        return set()
    names = {name for name, _ in digests}
    query = select(TrustRecord.agent_name, TrustRecord.sha256).where(col(TrustRecord.agent_name).in_(names))
    async with db.sessions() as session:
        rows = (await session.exec(query)).all()
    return {(name, digest) for name, digest in rows} & set(digests)


async def add_trust(db: Database, records: Sequence[TrustRecord]) -> None:
    """Store `records`; a definition already trusted keeps its first record (concurrent writers too)."""
    if not records:
        return

    def write(session: Session) -> None:
        dialect = session.get_bind().dialect.name
        insert = importlib.import_module(f"sqlalchemy.dialects.{dialect}").insert
        rows = [record.model_dump(exclude={"id"}) for record in records]
        statement = insert(table_of(TrustRecord)).on_conflict_do_nothing(
            index_elements=["agent_name", "sha256"]
        )
        session.execute(statement, rows)

    await db._write(write)


async def trust_history(db: Database, agent_name: str) -> list[TrustRecord]:
    """Every trust record of an agent name, newest first."""
    query = (
        select(TrustRecord)
        .where(TrustRecord.agent_name == agent_name)
        .order_by(col(TrustRecord.trusted_at).desc(), col(TrustRecord.id).desc())
    )
    async with db.sessions() as session:
        return list((await session.exec(query)).all())
