"""``m2s browse``: a read-only web app over a run directory (``app.py``: what it reads and serves;
``pages.py``: its Jinja2 templates, kept as Python strings so any install carries them).

The web stack (Starlette, uvicorn, python-multipart) is the ``browse`` extra; importing this
package without it is fine, serving says which extra to install."""

from .app import NotFound, RunView, make_app, serve

__all__ = ["NotFound", "RunView", "make_app", "serve"]
