"""The command layer: the implementations behind ``distill``'s commands (``distill/cli.py`` is its entry point).

This package and ``distill/cli.py`` are the only parts of ``distill`` that may import ``teachers``,
``students`` or ``export``; everything else in ``distill`` is the shared core those packages build on
(tests/test_layout.py checks this).
"""
