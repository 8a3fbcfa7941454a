"""The web page: click to segment, in plain HTML, CSS and JavaScript (``static/``), no build step.

The service mounts :func:`page_app` at ``/ui`` (``service.py``; BentoML's own API docs stay at
``/``) and ``segany ui TARGET`` serves the same app on localhost in front of any deployment
(``deploy/ui``). The page calls the API relative to itself (``../segment``), so it works under
either. Every response carries a strict Content-Security-Policy: the page runs no inline script
or style, no eval, and talks only to its own origin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE_PATH = "/ui"
CSP = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob: data:",  # the opened file (blob:) and a server-drawn photo (data:)
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
))
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def page_app() -> Any:
    """The page's static files (``index.html`` at the mount's root), each with the security headers."""
    from starlette.staticfiles import StaticFiles

    class Page(StaticFiles):
        def file_response(self, *args: Any, **kwargs: Any) -> Any:
            response = super().file_response(*args, **kwargs)
            response.headers.update(SECURITY_HEADERS)
            return response

    return Page(directory=STATIC_DIR, html=True)
