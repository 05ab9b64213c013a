"""One exception type for every user-facing error.

The CLI turns a DistillError into a single line on stderr and a non-zero exit; anything else is a bug
and keeps its traceback.
"""


class DistillError(Exception):
    """A problem with the user's input or files, reported as one line."""
