"""The baseline for cold start: a bare FastAPI app with one health route."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}
