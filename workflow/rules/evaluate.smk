"""Metrics: each metric's reference data once per test set, then every configured metric of the
registry (evaluate.metrics) per scored system, in one job per system."""


rule metric_reference:
    input:
        test_set="results/datasets/test.h5",
        inputs=metric_inputs(),
    output:
        "results/metrics/reference/{metric}.npz",
    log:
        "results/logs/metric_reference/{metric}.log",
    conda:
        "../../envs/lipsync.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    params:
        # The metric's own section and the shared settings it reads, so changing another
        # metric's options reruns nothing here.
        options=lambda w: json.dumps(
            {
                w.metric: config["evaluate"].get(w.metric, {}),
                "batch_size": config["evaluate"]["batch_size"],
                "device": config["evaluate"]["device"],
            },
            sort_keys=True,
        ),
        code=code_hash("metric-reference"),
    shell:
        "lipsync --log-file {log:q} metric-reference --metric {wildcards.metric}"
        " --test-set {input.test_set:q} --output {output:q} --threads {threads}"
        " --options {params.options:q}"


rule score:
    input:
        generated="results/generated/{run}.h5",
        test_set="results/datasets/test.h5",
        references=expand(
            "results/metrics/reference/{metric}.npz", metric=reference_metrics()
        ),
        inputs=metric_inputs(),
    output:
        scores="results/metrics/{run}/scores.tsv",
        clips="results/metrics/{run}/clips.tsv",
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
        options=lambda w: scoring_options(),  # a function: JSON braces are not wildcards
        references=reference_arguments,
        code=code_hash("score"),
    shell:
        "lipsync --log-file {log:q} score --generated {input.generated:q}"
        " --test-set {input.test_set:q} {params.references} --scores {output.scores:q}"
        " --clip-scores {output.clips:q} --summary {output.summary:q} --threads {threads}"
        " --options {params.options:q}"
