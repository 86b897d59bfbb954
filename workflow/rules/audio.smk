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
        clips=lambda w: shard_fingerprint(w.speaker, w.shard, "audio"),
        code=code_hash("mels"),
    shell:
        "lipsync --log-file {log:q} mels --manifest {input.manifest:q} --shard {wildcards.shard}"
        " --shard-size {params.shard_size} --output {output:q} --options {params.options:q}"
