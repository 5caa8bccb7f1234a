"""crashd's game engine: a pure, sans-IO core and the thin Trio drivers around it.

The core modules (``fairness``, ``curve``, ``round``) do no I/O and read no clock; time
and input arrive as arguments. ``engine`` never imports ``api``.
"""
