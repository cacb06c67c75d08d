"""The operator console: server-rendered pages for the people who run the hub (docs/console.md)."""
