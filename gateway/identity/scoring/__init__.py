"""The linkage model: comparison levels, m/u parameters, the pair scorer, clustering, its training
with Splink, evaluation and stored versions."""
