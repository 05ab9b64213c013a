"""Policies in closed loop: evaluation and pictures."""
