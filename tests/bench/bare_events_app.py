"""The ceiling for the event benchmark: a bare FastAPI app doing only the HTTP part of intake.

It reads the body, parses it, hops to the thread pool and answers JSON, as ctflow's
POST / does, with no ledger. Under the same load client this is the most any FastAPI
service process can do on this machine, so the benchmark reports ctflow against it.
"""

import json

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

app = FastAPI()


def _handle(headers: dict[str, str], body: bytes) -> dict:
    return {"status": "processed", "detail": str(len(json.loads(body)))}


@app.post("/")
async def receive(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse(await run_in_threadpool(_handle, dict(request.headers), body))


@app.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}
