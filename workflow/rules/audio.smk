"""Audio: LipGAN's mel spectrograms for every clip of one speaker shard."""


rule mels:
    input:
        manifest="results/corpus/{speaker}.tsv",
    output:
        "results/mels/{speaker}/{shard}.h5",
    log:
        "results/logs/mels/{speaker}/{shard}.log",
    benchmark:
        "results/benchmarks/mels/{speaker}/{shard}.tsv"
    conda:
        "../../envs/lipsync.yaml"
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        options=lambda w: options("audio", source=config["data"]["audio"]),
        shard_size=config["data"]["shard_size"],
        code=code_hash("data/audio.py", "data/decode.py", "data/manifest.py"),
    shell:
        "lipsync --log-file {log} mels --manifest {input.manifest} --shard {wildcards.shard}"
        " --shard-size {params.shard_size} --output {output} --options {params.options:q}"
