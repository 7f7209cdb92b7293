"""The ``stasis`` command: one module per command group, no business logic.

Each command parses its options, calls the layer below, and prints a result for
people (rich) or for programs (``--json``). Expected failures are
:class:`stasis.errors.StasisError` and end with their own exit code.
"""
