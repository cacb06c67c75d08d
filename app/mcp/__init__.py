"""The Model Context Protocol server behind `/api/v1/mcp` (docs/mcp.md): JSON-RPC framing (jsonrpc.py), the
protocol revisions spoken (protocol.py), methods per revision (server.py) and the hub's tools (tools.py), whose
results pass through app/text.py's scrub before they reach an agent. The Flask view is app/api/mcp.py; the tools
call the same services as the REST blueprints.
"""
