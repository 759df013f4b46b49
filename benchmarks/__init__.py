"""Speed measurements (not tests): ``python benchmarks/bench.py`` runs them all."""
