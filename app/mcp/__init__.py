"""The Model Context Protocol server behind `/api/v1/mcp` (docs/mcp.md): JSON-RPC framing (jsonrpc.py), protocol
versions and methods (server.py), the hub's tools (tools.py) and the scrubbing of text devices and clients wrote
before it reaches an agent (text.py). The Flask view is app/api/mcp.py; the tools call the same services as the
REST blueprints.
"""
