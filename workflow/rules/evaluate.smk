"""Metrics: FID reference statistics once, then FID, SSIM and PSNR per generated test set."""


rule fid_reference:
    input:
        test_set="results/datasets/test.h5",
        weights=fid_weights(),
    output:
        "results/metrics/fid_reference.npz",
    log:
        "results/logs/fid_reference.log",
    conda:
        "../../envs/lipsync.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    params:
        options=section("evaluate", "fid"),
        code=code_hash("fid-reference"),
    shell:
        "lipsync --log-file {log:q} fid-reference --test-set {input.test_set:q} --output {output:q}"
        " --threads {threads} --options {params.options:q}"


rule score:
    input:
        generated="results/generated/{run}.h5",
        test_set="results/datasets/test.h5",
        fid_reference="results/metrics/fid_reference.npz",
        weights=fid_weights(),
    output:
        scores="results/metrics/{run}/scores.tsv",
        summary="results/metrics/{run}/summary.json",
    log:
        "results/logs/score/{run}.log",
    conda:
        "../../envs/lipsync.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    params:
        options=section("evaluate"),
        code=code_hash("score"),
    shell:
        "lipsync --log-file {log:q} score --generated {input.generated:q} --test-set {input.test_set:q}"
        " --fid-reference {input.fid_reference:q} --scores {output.scores:q}"
        " --summary {output.summary:q} --threads {threads} --options {params.options:q}"
