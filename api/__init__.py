"""crashd's outside: the REST API, the WebSocket feed, authentication, limits and CLI."""
