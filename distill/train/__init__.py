"""The training engine every run shares, its device layout and its progress."""
