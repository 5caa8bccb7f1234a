"""Who may do what: API keys, route authentication, request signing, PSP webhook
signatures, feed tokens and rate limits."""
