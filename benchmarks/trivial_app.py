"""The baseline of the authorize benchmark: a plain FastAPI app under uvicorn answering the
same route with a constant JSON body, so the ratio shows what Serve, the shard turn and the
Cassandra write cost on top of the web framework.

    .venv/bin/python -m uvicorn benchmarks.trivial_app:app --port 8099
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

app = FastAPI(title="trivial baseline")


@app.post("/platform/v1/players/{player_id}/deposits/authorize")
async def authorize(player_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "tx_id": body.get("tx_id"),
        "decision": "allow",
        "reasons": [],
        "remaining": {"deposit": None},
        "limits": [],
    }
