"""The top floor: the ``distill`` command line and the commands it runs. Nothing below imports it."""
