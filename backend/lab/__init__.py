"""Offline tools (the `lab` extra): `broaden simulate`, `broaden demo-data` and their plots."""
