"""Every option of the training loop, in one table: default, type, range and why.

lipsync.training.loop.training_loop takes these keywords, the workflow checks `training.options` and the
runs' overrides against them before it plans, and the docs list them from here. Torch-free.
"""

from __future__ import annotations

from lipsync.core.options import Option, defaults

# The paper publishes neither epochs nor schedule; each value says where it comes from.
OPTIONS = {
    "seed": Option(0, int, "Seeds the weights, the data order and every random choice.",
                   minimum=0),
    "batch_size": Option(96, int, "Global batch (LipGAN: 96 per GPU), split evenly over the "
                         "processes of a multi-GPU run.", minimum=1),
    "total_samples": Option(5_000_000, int, "Training length in samples: about 7.4 epochs of "
                            "GRIDSmall (~670 k samples); unpublished, chosen to fit a day on one "
                            "GPU.", minimum=1),
    "checkpoint_every_samples": Option(96_000, int, "LipGAN saved every 1000 batches of 96.",
                                       minimum=1),
    "keep_checkpoints": Option(3, int, "Newest checkpoints kept; older ones are deleted.",
                               minimum=1),
    "validation_every_samples": Option(192_000, int, "How often the monitoring subset of the "
                                       "validation set is scored.", minimum=1),
    "validation_samples": Option(1024, int, "Evenly spaced validation samples scored "
                                 "(0 = all of them).", minimum=0),
    "snapshots": Option(0, int, "Intermediate generators written to run_dir/snapshots/{k}.pt "
                        "at k/(snapshots+1) of total_samples, k = 1..snapshots, so metrics can "
                        "be followed over training (they are never pruned).", minimum=0),
    "log_every_samples": Option(9_600, int, "How often mean losses and samples/s are logged.",
                                minimum=1),
    "num_workers": Option(2, int, "DataLoader worker processes (the workflow passes the job's "
                          "threads).", minimum=0),
    "mixed_precision": Option(True, bool, "true: bf16 where the GPU has it, else fp16 with a "
                              "gradient scaler; false, \"bf16\" or \"fp16\" force a choice. "
                              "float32 on CPU.", choices=("bf16", "fp16")),
    "device": Option("auto", str, "\"auto\" (CUDA when present), \"cpu\", \"cuda\" or "
                     "\"cuda:N\"."),
    "sync_batchnorm": Option(True, bool, "Multi-GPU: BatchNorm statistics over the global batch, "
                             "as a single process would see them."),
    "progress_bar": Option(True, bool, "Show a progress bar (periodic lines when not on a "
                           "terminal)."),
}
DEFAULTS = defaults(OPTIONS)
