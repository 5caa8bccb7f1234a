"""Helpers shared by the test folders (no tests here): real servers on 127.0.0.1,
a quick game, the security suite's log scan and money fingerprint, SDK helpers."""
