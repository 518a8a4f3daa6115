"""The floor of `GET /v1/executions/{id}`: bare FastAPI + uvicorn + sqlite3 reading the same row.

No framework of ours: one route that checks the bearer token, reads the execution's row from the
SQLite file qmcp's server writes with the standard library's `sqlite3`, decodes its JSON columns
and answers them as JSON. It runs on the same uvicorn (same loop, same HTTP parser) as `qmcp serve`,
so `server_floor` measures what qmcp adds on top of its stack.

    python -m bench._server_floor --db PATH --port PORT --token TOKEN
"""

from __future__ import annotations

import argparse
import hmac
import json
import sqlite3
from typing import Any

from fastapi import FastAPI, Header, HTTPException

__all__ = ["floor_app"]

_JSON_COLUMNS = (
    "input_data",
    "output_data",
    "topology_snapshot",
    "agents_snapshot",
    "teams_snapshot",
    "run_config",
    "runner_options",
    "history",
)


def floor_app(path: str, token: str) -> FastAPI:
    connection = sqlite3.connect(path, check_same_thread=False)
    connection.row_factory = sqlite3.Row
    expected = f"Bearer {token}".encode()
    app = FastAPI()

    @app.get("/v1/executions/{execution_id}")
    async def get_execution(execution_id: str, authorization: str = Header("")) -> dict[str, Any]:
        if not hmac.compare_digest(authorization.encode(), expected):
            raise HTTPException(401)
        row = connection.execute(
            "SELECT * FROM executions WHERE id = ?", (execution_id.replace("-", ""),)
        ).fetchone()
        if row is None:
            raise HTTPException(404)
        execution = dict(row)
        for column in _JSON_COLUMNS:
            if execution[column] is not None:
                execution[column] = json.loads(execution[column])
        return execution

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench._server_floor")
    parser.add_argument("--db", required=True, help="the SQLite file of a qmcp server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    uvicorn.run(floor_app(args.db, args.token), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
