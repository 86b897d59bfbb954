"""Metric sensitivity on a packed test set without the workflow: which metric notices which defect.

Writes each defect set of the real faces (lipsync.analysis.defects), scores it and the real faces
with the chosen registered metrics (lipsync.metrics.score), and prints the normalised sensitivity
table (lipsync.analysis.sensitivity) with the raw values and the wall time, measured in one run.
The workflow does the same at full size (`results/tables/sensitivity.md`); this is for a quick
look at real footage, e.g. the real-s1 subset that `lipsync pack-subset` writes:

    python benchmarks/sensitivity.py --test-set data/gpu-subset/test.h5 --output /tmp/sensitivity
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lipsync.analysis import defects, sensitivity  # noqa: E402
from lipsync.metrics import score  # noqa: E402

DEFECTS = {"desync": [1, 2, 4, 8], "frozen": [1], "blur": [1, 2, 4], "jpeg": [50, 20, 5],
           "noise": [5, 10, 20], "colour": [10, 40]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-set", required=True, help="a packed test split (datasets/test.h5)")
    parser.add_argument("--output", required=True, help="scratch folder for sets and scores")
    parser.add_argument("--metrics", default="ssim,psnr,lmd,csim")
    parser.add_argument("--csim-frames-per-clip", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--defects", type=json.loads, default=DEFECTS,
                        help='JSON kind -> strengths, e.g. \'{"jitter": [2], "flicker": [10]}\'')
    parser.add_argument("--words", nargs="*", default=[],
                        help="word tables (lipsync words) for content_swap")
    parser.add_argument("--evaluate", type=json.loads, default={},
                        help='JSON overlaid on the evaluate options, e.g. \'{"wer": {"weights": '
                             '"lipreader.pt", "words": "alignments/{speaker}.tsv"}}\'')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    output = Path(args.output)
    options = {"metrics": args.metrics.split(","), "csim": {"frames_per_clip":
                                                            args.csim_frames_per_clip},
               "bootstrap": {"resamples": 300}, **args.evaluate}
    started = time.perf_counter()
    systems = {"real": None} | {defects.system_name(k, s): (k, s)
                                for k, strengths in args.defects.items() for s in strengths}
    summaries = []
    for system, defect in systems.items():
        generated = output / "generated" / f"{system}.h5"
        if defect is None:
            from lipsync.tools.generate import generate

            generate("real", args.test_set, generated)
        else:
            defects.make_defect_set(args.test_set, *defect, generated, words=args.words)
        folder = output / "metrics" / system
        score.score_with_references(generated, args.test_set, output / "reference", folder,
                                    options=options, threads=args.threads,
                                    reuse_references=system != "real")
        summaries.append(folder / "summary.json")
    table = sensitivity.write_sensitivity(summaries, output / "tables", output / "sensitivity.png")
    seconds = time.perf_counter() - started
    raw = pd.read_csv(output / "tables" / "sensitivity.csv")
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(f"{len(systems) - 1} defect sets + the real faces of {args.test_set}, metrics "
              f"{args.metrics}, {seconds:.0f} s wall")
        print("\nraw values (defect, strength, column):")
        print(raw.pivot_table(index=["kind", "strength"], columns="column", values="value",
                              sort=False).round(4).to_string())
        print("\nnormalised change at each defect's strongest setting (1 = the metric's largest "
              "reaction to any defect; baseline: the real faces):")
        print(table.round(2).to_string(index=False))
        print()
        print(sensitivity.blind_spots(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
