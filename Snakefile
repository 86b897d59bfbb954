# lipsync: LipGAN and L1WGAN-GP on GRID, from corpus download to the paper's tables.
# Run: snakemake --cores N (paper config), or --configfile workflow/demo.yaml (CPU demo).

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/faces.smk"
include: "workflow/rules/audio.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


wildcard_constraints:
    speaker="s[0-9]+",
    shard="[0-9]+",
    split="small|full|test",
    run="[A-Za-z0-9_.-]+",


rule all:
    default_target: True
    input:
        all_targets(),
