"""The explorer's HTTP API and page: FastAPI (pydantic request models, so every request is checked
before it reaches a model) served by uvicorn on 127.0.0.1 unless another host is asked for.

    GET  /                  the page (static/index.html, static/explore.js, static/explore.css)
    GET  /api/info          study, strategies (best run per masking), modalities, controls
                            (a request names a strategy by its masking, a preset such as dirichlet_4m, or by a
                            family the study has one masking of)
    POST /api/upload        an image's bytes (Content-Type image/png or image/jpeg; ?name=FILE for its label)
                            -> {"upload": id, "label", "size", "canvas"}; a scene request names it by its id
    POST /api/predict       PredictRequest -> per strategy: predictions, scores, changes from hiding, attention,
                            training masks, its own time
    POST /api/features      FeaturesRequest -> 2-D feature projection per strategy
    GET  /api/report        the study's report table and its files, or a note that there is none
    GET  /report/{path}     a file of the report folder; nothing outside it

Bad requests get a 4xx with ``{"error": message}``: 422 for a wrong shape or value, 413 for a body
over ``MAX_BODY`` bytes (an upload: over ``uploads.MAX_BYTES``), 415 for an upload that is not a PNG or
JPEG, 411 for a body of unknown length, 404 for anything not served.

``serve`` runs the server until Ctrl-C and then returns: uvicorn shuts down and re-raises the SIGINT,
which ends here as one line, not a traceback.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from ablate.explorer.explorer import ExploreError, Explorer
from ablate.explorer.requests import FeaturesRequest, PredictRequest
from ablate.explorer.uploads import MAX_BYTES, UploadError

STATIC = Path(__file__).parent / "static"
MAX_BODY = 64 * 1024
UPLOAD = "/api/upload"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _describe(errors: list[dict]) -> str:
    """pydantic's errors as 'key.path: what is wrong' lines."""
    lines = []
    for err in errors:
        if err["type"] == "json_invalid":
            lines.append(f"the body is not valid JSON: {err.get('ctx', {}).get('error', err['msg'])}")
            continue
        loc = ".".join(str(p) for p in err["loc"] if p != "body") or "body"
        lines.append(f"{loc}: {err['msg']}")
    return "; ".join(dict.fromkeys(lines))


def create_app(explorer: Explorer) -> FastAPI:
    app = FastAPI(title=f"nano4M explorer: {explorer.study.name}", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def cap_body(request: Request, call_next):
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None:
                return _error(411, "a request body needs a Content-Length header")
            limit = MAX_BYTES if request.url.path == UPLOAD else MAX_BODY
            if not length.isdigit() or int(length) > limit:
                return _error(413, f"request body of {length} bytes; at most {limit}")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _describe(exc.errors()))

    @app.exception_handler(ExploreError)
    async def unanswerable(request: Request, exc: ExploreError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(UploadError)
    async def refused(request: Request, exc: UploadError) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # Plain (not async) handlers: FastAPI runs them in its thread pool, so a prediction never blocks the loop.
    @app.get("/api/info")
    def info() -> dict:
        return explorer.info()

    @app.post(UPLOAD)
    async def upload(request: Request, name: str = "") -> dict:
        data = await request.body()  # the raw bytes: no multipart parser needed, the size is capped above
        return await run_in_threadpool(explorer.upload, data, request.headers.get("content-type", ""), name)

    @app.post("/api/predict")
    def predict(req: PredictRequest) -> dict:
        return explorer.predict(req)

    @app.post("/api/features")
    def features(req: FeaturesRequest) -> dict:
        return explorer.features(req)

    @app.get("/api/report")
    def report() -> dict:
        return explorer.report()

    @app.get("/report/{path:path}")
    def report_file(path: str):
        found = explorer.report_file(path)
        if found is None:
            return _error(404, f"{path}: not a file of the report folder reports/{explorer.study.name}/")
        return FileResponse(found)

    return app


def server(explorer: Explorer, host: str = "127.0.0.1", port: int = 8000) -> uvicorn.Server:
    """A uvicorn server for the page; ``run()`` it (port 0 picks a free port)."""
    return uvicorn.Server(uvicorn.Config(create_app(explorer), host=host, port=port, log_level="warning"))


def serve(explorer: Explorer, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until Ctrl-C, then say so in one line (``ablate explore``)."""
    try:
        server(explorer, host, port).run()
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it shut down on, after shutting down
        pass
    print("explorer stopped")


@contextmanager
def running(explorer: Explorer, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve in a background thread while the block runs (tests, benchmarks); yields the base URL."""
    uvicorn_server = server(explorer, host, port)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uvicorn_server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the explorer server did not start on {host}:{port}")
        time.sleep(0.05)
    bound_host, bound_port = uvicorn_server.servers[0].sockets[0].getsockname()[:2]
    try:
        yield f"http://{bound_host}:{bound_port}"
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=10)
