"""Experiments that run the whole pipeline: the paper's ablation in miniature (:mod:`experiments.ablation`)."""
