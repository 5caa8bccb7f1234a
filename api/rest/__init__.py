"""The REST API v1: the Quart-Trio app, its contract (validation, problems, OpenAPI,
idempotency, conditional requests, request ids) and its routes."""
