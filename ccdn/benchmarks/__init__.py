"""Benchmarks behind docs/performance.md (models, data, train); the ``ccdn benchmark`` command is :mod:`.cli`."""
