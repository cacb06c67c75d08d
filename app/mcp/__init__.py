"""The Model Context Protocol server behind `/api/v1/mcp` (docs/mcp.md): the HTTP endpoint (http.py), JSON-RPC
framing (jsonrpc.py), the protocol revisions spoken (protocol.py), methods per revision (server.py) and the hub's
tools (tools.py), whose results pass through app/core/text.py's scrub before they reach an agent. The tools call the
same services as the REST blueprints.
"""

from flask import Flask


def init_app(app: Flask) -> None:
    from app.mcp import http
    from app.web.urls import API_PREFIX

    app.register_blueprint(http.blueprint, url_prefix=API_PREFIX)
    app.register_blueprint(http.metadata_blueprint)
