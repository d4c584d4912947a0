"""Policies: pure functions of (history, measured cold starts, now) that decide which models stay warm."""
