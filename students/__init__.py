"""Shallow students distilled from deep teachers."""
