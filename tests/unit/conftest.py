"""Unit tests: pure code, no servers. Shared builders live in ``model_specs.py`` beside this."""
