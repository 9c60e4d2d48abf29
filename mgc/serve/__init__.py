"""`mgc serve`: label one upload the moment it arrives and find similar catalogue tracks, on Ray
Serve, with a listening page. `config` (ServeConfig), `service` (the model and catalogue, no web
framework), `api` (the routes), `app` (the Serve deployment, `start`, `write_config`), page.html."""

from mgc.serve.config import ServeConfig

__all__ = ["ServeConfig"]
