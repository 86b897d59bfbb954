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
        options=options("faces", "video"),
        shard_size=config["data"]["shard_size"],
        code=code_hash(
            "data/faces.py", "data/detectors.py", "data/decode.py", "data/manifest.py"
        ),
    shell:
        "lipsync --log-file {log} faces --manifest {input.manifest} --shard {wildcards.shard}"
        " --shard-size {params.shard_size} --output {output.crops} --coverage {output.coverage}"
        " --threads {threads} --options {params.options:q}"
