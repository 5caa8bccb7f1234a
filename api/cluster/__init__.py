"""API processes and the one-command topology: the REST API without the engine.

``crashd api`` serves the REST API from a process that holds no engine: reads go to the
database (``crashd.engine.ledger.reads``), money-moving calls go to the engine as
commands over a Redis stream (``client``), carrying their idempotency key; the engine
runs them (``desk``) under its idempotency rules and answers on the process's own reply
stream. ``crashd cluster`` starts an engine, edges and API processes on one machine
(``topology``). docs/scale-out.md has the picture, the failure cases and the figures.
"""
