"""The SyncNet expert's data and training: windows of a packed training split, its objective and
validation metric (`lipsync train-syncnet`; the loop is lipsync.training.loop's), and a synthetic packed split whose mouths follow the audio."""
