"""crashd's benchmark suite: ``python -m bench NAME``; each NAME is a module here."""
