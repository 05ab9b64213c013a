"""Runs on disk: their records, checkpoints and the networks restored from them."""
