"""The MCP protocol revisions this server speaks and the HTTP headers that carry them (app/mcp/server.py uses them;
the OpenAPI document names them)."""

HANDSHAKE_VERSIONS = ("2025-06-18", "2025-11-25")
LATEST_HANDSHAKE_VERSION = "2025-11-25"
STATELESS_VERSION = "2026-07-28"
SUPPORTED_VERSIONS = (*HANDSHAKE_VERSIONS, STATELESS_VERSION)

VERSION_HEADER = "MCP-Protocol-Version"
METHOD_HEADER = "Mcp-Method"
NAME_HEADER = "Mcp-Name"
