"""The SyncNet expert of the LSE metrics: one GPU job on a training split's real faces."""


rule train_syncnet:
    input:
        # The expert never sees the test split: it validates on held-out training clips.
        train_set=lambda w: f"results/datasets/{config['syncnet']['train_set']}.h5",
    output:
        protected("results/syncnet/expert.pt"),
    log:
        "results/logs/syncnet/train.log",
    benchmark:
        "results/benchmarks/syncnet/train.tsv"
    conda:
        "../../envs/lipsync.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=lambda w, attempt: 12 * 60 * attempt,
    params:
        options=lambda w: section("syncnet"),
        code=code_hash("train-syncnet"),
    shell:
        "lipsync --log-file {log:q} train-syncnet --train-set {input.train_set:q}"
        " --output {output:q} --threads {threads} --options {params.options:q}"
