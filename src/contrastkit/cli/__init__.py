"""The ``contrastkit`` command."""
