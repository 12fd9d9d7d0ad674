"""The parts of a training run: :mod:`.loop` (the ``Trainer``), :mod:`.data` (datasets, the
epoch-sharded sampler) and :mod:`.determinism` (seeds and flags). :mod:`ccdn.train` puts them
together into ``train(config, run_dir)`` and the ``ccdn train`` command."""
