"""Policies in closed loop: evaluation, pictures and JAX latency."""
