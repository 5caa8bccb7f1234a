"""Feed edges: the engine's feed served by other processes, on this machine or others.

The engine stays the one writer of the feed: its hub assigns every ``seq`` and encodes
every frame once. ``relay`` taps that hub and forwards each frame, byte for byte, with
*keyframes* (the snapshot state the engine's hub would serve) after every change of the
public state and every frame on a watched user channel, and at least once a second.
An edge (``crashd edge``) applies that stream to its own hub (``mirror.EdgeHub``) and
serves its subscribers with today's feed server: the same frames, ``seq`` and epoch as
the engine's, so a client may resume on any edge.

Transports (``records`` is the one encoding): a Unix socket (``unix``: several edges on
one machine, one port with ``SO_REUSEPORT``) and Redis Streams (``streams``: edges on
other machines; the engine ``XADD``s each record with its ``seq`` as the entry id into
a per-epoch stream trimmed to the replay window, edges ``XREAD`` from their last id).
docs/scale-out.md has the topology, the failure cases and the measured figures.
"""
