"""Verifiable settlement: signed round transcripts, start seals and bet receipts.

Pure, like the round engine it checks: canonical JSON (``canonical``), the seal's Merkle
tree (``merkle``), the signed documents (``documents``), the per-round record the engine
feeds (``recorder``), the re-run of a round through ``crashd.engine.round`` (``replay``)
and the audit of a run of transcripts with receipts (``audit``). Keys come in from
outside (``crashd.engine.signingkey`` reads the key file); the Trio side is
``crashd.engine.notary``. docs/fairness.md specifies every format.
"""
