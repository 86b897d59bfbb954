"""The GRID lip reader: word-slot examples from packed splits, its objective, and its training."""
