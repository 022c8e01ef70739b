"""The search service over a finished run: a page and a JSON API (Starlette, run by uvicorn).

    GET  /                                   the page (a query in the URL runs: /?q=TEXT&gallery=NAME)
    GET  /api/galleries                      what can be searched
    GET  /api/search?q=TEXT&gallery=NAME&k=K a caption's top-K
    GET  /api/search?like=ID&of=NAME&gallery=NAME&k=K   one of the run's items as the query
    POST /api/search?gallery=NAME&k=K        an image: the body (Content-Type image/...) or
                                             the multipart field `image`
    GET  /image/NAME/ID?size=S               a gallery image, scaled to fit S pixels
    any search also takes by=CHANNEL (one channel alone) or by=hybrid (a text query by the words
    read in the photos and by the model together) and filters of its photos: tag=LABEL,
    prefix=FOLDER/, after=YYYY-MM-DD, before=YYYY-MM-DD (taken: EXIF, else mtime), format=JPEG

Every error is JSON {"error": "..."} with 400 (bad parameter, undecodable image),
404 (unknown gallery or item), 413 (body over the limit) or 415 (a type it cannot take).
The model and the gallery matrices are held once (tuwen.serve.loaded_run) and shared by the
requests, which run in Starlette's thread pool (torch and numpy release the GIL); the texts of
concurrent requests are encoded in one forward pass (tuwen.serve.batching).
"""

from __future__ import annotations

import io
import logging
from functools import lru_cache
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tuwen.files.images import ImageRejected, load_image
from tuwen.run.declaration import IMAGES, TEXTS
from tuwen.serve.loaded_run import Filters, LiveRun, QueryError, UnknownGallery

FILTERS = ("tag", "prefix", "after", "before", "format")

LOG = logging.getLogger(__name__)
MAX_K = 100
PAGE_FILES = {"serve.js": "text/javascript", "serve.css": "text/css", "parts.js": "text/javascript"}


class BodyTooLarge(Exception):
    """A request body over the limit: the server's 413."""


class UnsupportedType(Exception):
    """A body the server cannot take as an image: the server's 415."""


def _page_file(name: str) -> str:
    if name == "parts.js":  # shared with the browse page
        return (resources.files("tuwen.report.browse") / name).read_text(encoding="utf-8")
    return (resources.files("tuwen.serve") / "page" / name).read_text(encoding="utf-8")


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _top(request: Request) -> int:
    raw = request.query_params.get("k", "10")
    try:
        k = int(raw)
    except ValueError:
        raise QueryError(f"k must be a whole number, got {raw!r}") from None
    if not 1 <= k <= MAX_K:
        raise QueryError(f"k must be between 1 and {MAX_K}, got {k}")
    return k


# A body over the limit whose length is declared is read to its end (and dropped) before the
# 413 is sent, up to this many times the limit: a client that sends its whole body before it
# reads the answer (Python's urllib, requests) would otherwise see a broken pipe instead of the
# JSON error. A longer one, or one of no declared length (chunked, whose end may never come), is
# refused as soon as it passes the limit, and the connection closed.
DRAIN_FACTOR = 8


async def _body(request: Request, limit: int) -> bytes:
    """Read the request body; past `limit` bytes, refuse it (BodyTooLarge)."""
    declared = request.headers.get("content-length")
    length = int(declared) if declared is not None and declared.isdigit() else None
    if length is not None and length > limit * DRAIN_FACTOR:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit and length is None:
            raise BodyTooLarge
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise BodyTooLarge
    return b"".join(chunks)


async def _uploaded_image(request: Request, limit: int) -> tuple[bytes, str]:
    """Give the uploaded image's bytes and a name for it, from the body or the field `image`."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type.startswith("image/"):
        return await _body(request, limit), "the uploaded image"
    if content_type == "multipart/form-data":
        body = await _body(request, limit)

        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        form = await Request(request.scope, replay).form(max_files=1, max_fields=10)
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise QueryError("the multipart body has no file field named 'image'")
        upload_type = (upload.content_type or "").lower()
        if upload_type and not upload_type.startswith("image/") and upload_type != "application/octet-stream":
            raise UnsupportedType(f"the field 'image' is {upload_type}, not an image")
        data = await upload.read()
        return data, upload.filename or "the uploaded image"
    raise UnsupportedType(
        f"POST takes an image (Content-Type image/...) or multipart/form-data with a field 'image', "
        f"not {content_type or 'a body without a type'}"
    )


def _live(request: Request) -> LiveRun:
    return request.app.state.live


async def page(request: Request) -> Response:
    return Response(_page_file("index.html"), media_type="text/html; charset=utf-8")


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in PAGE_FILES:
        return error(404, f"no page file {name!r}")
    return Response(_page_file(name), media_type=f"{PAGE_FILES[name]}; charset=utf-8")


async def galleries(request: Request) -> Response:
    live = _live(request)
    loaded = live.current()
    return JSONResponse(
        {
            "run": str(live.run),
            "galleries": loaded.galleries(),
            "defaults": {kind: loaded.default_gallery(kind) for kind in (TEXTS, IMAGES)},
            "models": sorted({c.tag for c in loaded.channels.values()}),
            "max_body": request.app.state.max_body,
            "loaded_at": loaded.loaded_at,
            "reload_error": live.reload_error,
            "warning": loaded.notice,
        }
    )


async def search(request: Request) -> Response:
    live = _live(request)
    loaded = live.current()
    params = request.query_params
    k = _top(request)
    by = params.get("by") or None  # one channel alone, e.g. text:use-m3 (by meaning)
    # Only the photos with a zero-shot tag, under a sub-folder, of a date range, of a format.
    filters = Filters(**{name: params.get(name) or None for name in FILTERS})
    if request.method == "POST":
        data, source = await _uploaded_image(request, request.app.state.max_body)
        if not data:
            raise QueryError("the uploaded image is empty")
        gallery = params.get("gallery") or loaded.default_gallery(IMAGES)
        loaded.gallery(gallery)
        query = await run_in_threadpool(loaded.image_query, data, gallery, source, by)
    elif "like" in params:
        collection = params.get("of") or params.get("gallery")
        if not collection:
            raise QueryError("like=ID needs of=COLLECTION, the collection that holds the item")
        query = loaded.item_query(collection, params["like"])
        gallery = params.get("gallery") or collection
        loaded.gallery(gallery)
    else:
        text = params.get("q")
        if text is None:
            raise QueryError("give q=TEXT, like=ID&of=COLLECTION, or POST an image")
        gallery = params.get("gallery") or loaded.default_gallery(TEXTS)
        loaded.gallery(gallery)
        query = await run_in_threadpool(loaded.text_query, text, gallery, by)
    answer = await run_in_threadpool(loaded.search, query, gallery, k, by, filters)
    answer["reload_error"] = live.reload_error
    return JSONResponse(answer)


async def duplicates(request: Request) -> Response:
    gallery = request.query_params.get("gallery")
    if not gallery:
        raise QueryError("give gallery=NAME, an image collection of the run")
    loaded = _live(request).current()
    return JSONResponse(await run_in_threadpool(loaded.duplicates, gallery))


async def image(request: Request) -> Response:
    loaded = _live(request).current()
    collection = loaded.gallery(request.path_params["collection"])
    item = collection.files.get(request.path_params["item"]) if collection.files is not None else None
    if item is None:
        return error(404, f"{collection.name} has no image {request.path_params['item']!r}")
    raw = request.query_params.get("size", "256")
    if not raw.isdigit() or not 16 <= int(raw) <= 1024:
        raise QueryError(f"size must be a whole number from 16 to 1024, got {raw!r}")
    path, digest = item
    data = await run_in_threadpool(_thumbnail, path, digest, int(raw), loaded.max_image_pixels)
    if data is None:
        return error(404, f"{path}: the image can no longer be read")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})


async def on_query_error(request: Request, exc: Exception) -> Response:
    return error(400, str(exc))


async def on_unknown(request: Request, exc: Exception) -> Response:
    return error(404, str(exc))


async def on_too_large(request: Request, exc: Exception) -> Response:
    return error(413, f"the body is larger than the limit of {request.app.state.max_body} bytes")


async def on_type(request: Request, exc: Exception) -> Response:
    return error(415, str(exc))


async def on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, exc.detail)


async def on_multipart(request: Request, exc: Exception) -> Response:
    return error(400, f"bad multipart body: {exc}")


async def on_other(request: Request, exc: Exception) -> Response:
    LOG.exception("request %s failed", request.url.path)
    return error(500, f"internal error: {type(exc).__name__}")


ROUTES = [
    Route("/", page),
    Route("/static/{name}", static),
    Route("/api/galleries", galleries),
    Route("/api/search", search, methods=["GET", "POST"]),
    Route("/api/duplicates", duplicates),
    Route("/image/{collection}/{item}", image),
]


def create_app(live: LiveRun, max_body: int = 20 * 1024 * 1024) -> Starlette:
    """Give the service's app over a run that `live` holds (and reloads when a rerun finishes)."""
    app = Starlette(
        routes=ROUTES,
        exception_handlers={
            QueryError: on_query_error,
            UnknownGallery: on_unknown,
            BodyTooLarge: on_too_large,
            UnsupportedType: on_type,
            MultiPartException: on_multipart,
            HTTPException: on_http,
            Exception: on_other,
        },
    )
    app.state.live = live
    app.state.max_body = max_body
    return app


@lru_cache(maxsize=2048)
def _thumbnail(path: str, digest: str, size: int, max_pixels: int) -> bytes | None:
    """Give a JPEG of the image at `path` scaled to fit `size`; cached by content digest and size."""
    try:
        picture, _ = load_image(path, max_pixels, draft_size=size)
    except ImageRejected:
        return None
    picture.thumbnail((size, size))
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=85)
    return out.getvalue()


def serve(
    run: Path,
    host: str,
    port: int,
    max_body: int,
    ground_truth: Path | None,
    milvus: str | None = None,
    backend: str | None = None,
) -> None:
    """Load the run and answer until interrupted (`milvus`: search the galleries exported there;
    `backend`: what encodes queries, tuwen.clip.onnx_towers.choose_backend)."""
    import uvicorn

    live = LiveRun(run, ground_truth=ground_truth, milvus=milvus, backend=backend)
    loaded = live.current()
    loaded.warm()
    sizes = ", ".join(
        f"{g['name']} ({g['items']}{'' if g['search']['exact'] else ', ' + g['search']['index']})"
        for g in loaded.galleries()
    )
    print(f"tuwen serve: {run.resolve()} — galleries {sizes}", flush=True)
    print(f"tuwen serve: open http://{host}:{port}/", flush=True)
    uvicorn.run(create_app(live, max_body), host=host, port=port, log_level="warning", access_log=False)
