"""Faces: detect, smooth, pad and crop every frame of one speaker shard."""


rule faces:
    input:
        manifest="results/corpus/{speaker}.tsv",
        weights=s3fd_weights(),
    output:
        crops="results/faces/{speaker}/{shard}.h5",
        coverage="results/faces/{speaker}/{shard}.coverage.tsv",
    log:
        "results/logs/faces/{speaker}/{shard}.log",
    benchmark:
        "results/benchmarks/faces/{speaker}/{shard}.tsv"
    conda:
        "../../envs/lipsync.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        options=faces_options(),
        shard_size=config["data"]["shard_size"],
        clips=lambda w: shard_fingerprint(w.speaker, w.shard, "video"),
        code=code_hash("faces"),
    shell:
        "lipsync --log-file {log:q} faces --manifest {input.manifest:q} --shard {wildcards.shard}"
        " --shard-size {params.shard_size} --output {output.crops:q} --coverage {output.coverage:q}"
        " --threads {threads} --options {params.options:q}"
