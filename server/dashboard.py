"""The built-in live page, GET /dashboard, and the script and style it loads, shipped in server/static/.

The page reads this server's own /metrics every 2 s and derives every number in the browser (static/prometheus.js
parses the text and computes rates, static/dashboard.js says what each panel shows), so this module only serves
files: it computes no metric and touches no runtime state. Like /metrics it needs no API key, and it stays out of
/openapi.json: it is a page for people, not part of the API. Its Content-Security-Policy lets the page load
nothing but this server's own files, so it works offline and cannot start depending on a CDN unnoticed.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

# Read once: a missing file (a package built without its data) fails at import, naming the file.
_STATIC = files("server") / "static"
_PAGE = (_STATIC / "dashboard.html").read_bytes()
_ASSETS = {name: ((_STATIC / name).read_bytes(), media_type) for name, media_type in (
    ("prometheus.js", "text/javascript"), ("dashboard.js", "text/javascript"), ("dashboard.css", "text/css"),
    ("favicon.svg", "image/svg+xml"))}

_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "Cache-Control": "no-cache",  # revalidate, so an upgraded server's page is what loads
    "X-Content-Type-Options": "nosniff",
}

router = APIRouter(include_in_schema=False)


@router.get("/dashboard")
async def dashboard() -> Response:
    """The live page (HTML)."""
    return Response(_PAGE, media_type="text/html; charset=utf-8", headers=_HEADERS)


def _serve(name: str, body: bytes, media_type: str) -> None:
    async def asset() -> Response:
        return Response(body, media_type=f"{media_type}; charset=utf-8", headers=_HEADERS)

    router.add_api_route(f"/dashboard/{name}", asset, methods=["GET"], name=f"dashboard_{name}")


for _name, (_body, _media_type) in _ASSETS.items():
    _serve(_name, _body, _media_type)
