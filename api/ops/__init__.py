"""The operator's side of crashd: metrics, readiness, structured logs, limits and the
house bankroll, round control, chain rotation, RTP monitoring (docs/operations.md)."""
