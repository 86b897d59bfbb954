"""The SyncNet expert's data and training: windows of a packed training split, the training loop
(`lipsync train-syncnet`), and a synthetic packed split whose mouths follow the audio."""
