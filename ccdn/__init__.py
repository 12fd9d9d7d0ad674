"""ccdn-repro: reproducibility harness for CCDN (Wan et al., Neural Networks 2021)."""

__version__ = "0.1.0"
