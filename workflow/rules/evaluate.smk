"""Metrics: each metric's reference data once per test set, then each configured metric of the
registry (evaluate.metrics) per scored system in its own job, merged per system into the files the
tables, figures and studies read. A metric's options or module rescore that metric alone.
"""


wildcard_constraints:
    metric="[a-z0-9_]+",


localrules:
    merge_scores,


rule metric_reference:
    input:
        test_set="results/datasets/test.h5",
        inputs=lambda w: metric_input_files(w.metric),
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
        code=lambda w: metric_code_hash("metric-reference", w.metric),
    shell:
        "lipsync --log-file {log:q} metric-reference --metric {wildcards.metric}"
        " --test-set {input.test_set:q} --output {output:q} --threads {threads}"
        " --options {params.options:q}"


rule score_metric:
    input:
        generated="results/generated/{run}.h5",
        test_set="results/datasets/test.h5",
        references=lambda w: metric_reference_file(w.metric),
        inputs=lambda w: metric_input_files(w.metric),
    output:
        result="results/metrics/{run}/metric/{metric}.json",
        rows="results/metrics/{run}/metric/{metric}.tsv",
    log:
        "results/logs/score/{run}/{metric}.log",
    conda:
        "../../envs/lipsync.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    params:
        options=lambda w: metric_options(w.metric),
        references=lambda w, input: " ".join(
            f"--reference {shlex.quote(f'{_reference_source(w.metric)}={path}')}"
            for path in input.references
        ),
        code=lambda w: metric_code_hash("score-metric", w.metric),
    shell:
        "lipsync --log-file {log:q} score-metric --metric {wildcards.metric}"
        " --generated {input.generated:q} --test-set {input.test_set:q} {params.references}"
        " --output {output.result:q} --threads {threads} --options {params.options:q}"


rule merge_scores:
    input:
        parts=expand(
            "results/metrics/{{run}}/metric/{metric}.json", metric=scored_metrics()
        ),
        rows=expand(
            "results/metrics/{{run}}/metric/{metric}.tsv", metric=scored_metrics()
        ),
        test_set="results/datasets/test.h5",
    output:
        scores="results/metrics/{run}/scores.tsv",
        clips="results/metrics/{run}/clips.tsv",
        summary="results/metrics/{run}/summary.json",
    log:
        "results/logs/merge_scores/{run}.log",
    conda:
        "../../envs/lipsync.yaml"
    params:
        code=code_hash("merge-scores"),
    shell:
        "lipsync --log-file {log:q} merge-scores --parts {input.parts:q}"
        " --test-set {input.test_set:q} --scores {output.scores:q}"
        " --clip-scores {output.clips:q} --summary {output.summary:q}"
