"""The one training loop and what it rests on: its options, checkpoints, mixed precision, data
parallelism, random state."""
