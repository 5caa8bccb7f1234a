"""The round: its phase and command tables, the pure state machine of one round, the
sequencer that strings rounds along the chain, their configuration and events."""
