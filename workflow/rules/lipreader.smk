"""The GRID lip reader of the wer and cer metrics: one GPU job on a training split's real mouths
and the corpus's word alignments."""


rule train_lipreader:
    input:
        # Like the sync expert, it never sees the test split: it validates on held-out
        # training clips.
        train_set=lambda w: f"results/datasets/{config['lipreader']['train_set']}.h5",
        words=expand("results/alignments/{speaker}.tsv", speaker=SPEAKERS),
    output:
        protected("results/lipreader/lipreader.pt"),
    log:
        "results/logs/lipreader/train.log",
    benchmark:
        "results/benchmarks/lipreader/train.tsv"
    conda:
        "../../envs/lipsync.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=lambda w, attempt: 4 * 60 * attempt,
    params:
        options=lambda w: section("lipreader"),
        code=code_hash("train-lipreader"),
    shell:
        "lipsync --log-file {log:q} train-lipreader --train-set {input.train_set:q}"
        " --words {input.words:q} --output {output:q} --threads {threads}"
        " --options {params.options:q}"
