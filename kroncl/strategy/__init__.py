"""Continual training on Avalanche: adapter-set modes, the strategy, plugins, checkpoints, the loop."""
