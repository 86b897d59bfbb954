"""Splits (GRIDSmall, GRIDFull, GRIDTest) and one HDF5 training or test set per split."""


rule splits:
    input:
        coverage=shard_files("results/faces/{speaker}/{shard}.coverage.tsv"),
        mels=shard_files("results/mels/{speaker}/{shard}.h5"),
    output:
        expand("results/splits/{split}.tsv", split=SPLITS),
        summary=report(
            "results/splits/summary.tsv",
            caption="../report/splits.rst",
            category="Data",
        ),
    log:
        "results/logs/splits.log",
    conda:
        "../../envs/lipsync.yaml"
    params:
        options=section("splits"),
        output_dir=lambda w, output: os.path.dirname(output[0]),
        code=code_hash("splits"),
    shell:
        "lipsync --log-file {log:q} splits --coverage {input.coverage:q} --mels {input.mels:q}"
        " --output-dir {params.output_dir:q} --options {params.options:q}"


rule pack:
    input:
        clips="results/splits/{split}.tsv",
        faces=shard_files("results/faces/{speaker}/{shard}.h5"),
        mels=shard_files("results/mels/{speaker}/{shard}.h5"),
    output:
        "results/datasets/{split}.h5",
    log:
        "results/logs/pack/{split}.log",
    benchmark:
        "results/benchmarks/pack/{split}.tsv"
    conda:
        "../../envs/lipsync.yaml"
    resources:
        mem_mb=4000,
        runtime=240,
    params:
        options=lambda w: json.dumps(
            {
                "samples": config["samples"],
                "dataset": config["dataset"],
                "audio": {
                    k: config["audio"][k] for k in ("sample_rate", "hop_length")
                },
                "video": {"fps": config["video"]["fps"]},
                "seed": config["splits"]["seed"],
            },
            sort_keys=True,
        ),
        code=code_hash("pack"),
    shell:
        "lipsync --log-file {log:q} pack --split {wildcards.split} --clips {input.clips:q}"
        " --faces {input.faces:q} --mels {input.mels:q} --output {output:q}"
        " --options {params.options:q}"


rule words:
    input:
        manifest="results/corpus/{speaker}.tsv",
    output:
        "results/alignments/{speaker}.tsv",
    log:
        "results/logs/words/{speaker}.log",
    conda:
        "../../envs/lipsync.yaml"
    params:
        code=code_hash("words"),
    shell:
        "lipsync --log-file {log:q} words --manifest {input.manifest:q} --output {output:q}"


rule contact_sheet:
    input:
        "results/datasets/{split}.h5",
    output:
        report(
            "results/figures/contact_sheet_{split}.png",
            caption="../report/contact_sheet.rst",
            category="Data",
        ),
    log:
        "results/logs/contact_sheet/{split}.log",
    conda:
        "../../envs/lipsync.yaml"
    params:
        code=code_hash("contact-sheet"),
    shell:
        "lipsync --log-file {log:q} contact-sheet --dataset {input:q} --output {output:q}"
