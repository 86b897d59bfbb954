"""Analysis: defects of the real test faces, scored like any system, and metric agreement."""


ruleorder: defect > generate


rule defect:
    input:
        test_set="results/datasets/test.h5",
        # only content_swap reads the word alignments; other kinds do not wait for them
        words=lambda w: (
            expand("results/alignments/{speaker}.tsv", speaker=SPEAKERS)
            if w.kind == "content_swap"
            else []
        ),
    output:
        "results/generated/defect-{kind}-{strength}.h5",
    log:
        "results/logs/defect/{kind}-{strength}.log",
    wildcard_constraints:
        kind="[a-z_]+",
        strength="[0-9.]+",
    conda:
        "../../envs/lipsync.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        code=code_hash("defect"),
    shell:
        "lipsync --log-file {log:q} defect --test-set {input.test_set:q} --kind {wildcards.kind}"
        " --strength {wildcards.strength} --output {output:q} --words {input.words:q}"


rule sensitivity:
    input:
        expand(
            "results/metrics/{system}/summary.json",
            system=["real"] + defect_systems(),
        ),
    output:
        csv="results/tables/sensitivity.csv",
        table=report(
            "results/tables/sensitivity.md",
            caption="../report/sensitivity.rst",
            category="Metric sensitivity",
        ),
        figure=report(
            "results/figures/sensitivity.png",
            caption="../report/sensitivity.rst",
            category="Metric sensitivity",
        ),
    log:
        "results/logs/sensitivity.log",
    conda:
        "../../envs/lipsync.yaml"
    params:
        output_dir=lambda w, output: os.path.dirname(output.csv),
        code=code_hash("sensitivity"),
    shell:
        "lipsync --log-file {log:q} sensitivity --summaries {input:q}"
        " --output-dir {params.output_dir:q} --figure {output.figure:q}"


rule agreement:
    input:
        summaries=expand(
            "results/metrics/{system}/summary.json", system=analysed_systems()
        ),
        scores=expand("results/metrics/{system}/scores.tsv", system=analysed_systems()),
        clips=expand("results/metrics/{system}/clips.tsv", system=analysed_systems()),
        generated=expand("results/generated/{system}.h5", system=analysed_systems()),
        test_set="results/datasets/test.h5",
    output:
        correlations="results/tables/correlations.csv",
        ranking="results/tables/ranking.csv",
        table=report(
            "results/tables/agreement.md",
            caption="../report/agreement.rst",
            category="Metric agreement",
        ),
        heat_map=report(
            "results/figures/agreement.png",
            caption="../report/agreement.rst",
            category="Metric agreement",
        ),
        strip=report(
            "results/figures/disagreement.png",
            caption="../report/disagreement.rst",
            category="Metric agreement",
        ),
        progress=report(
            "results/figures/progress.png",
            caption="../report/progress.rst",
            category="Metric agreement",
        ),
    log:
        "results/logs/agreement.log",
    conda:
        "../../envs/lipsync.yaml"
    params:
        options=section("analysis", "agreement"),
        output_dir=lambda w, output: os.path.dirname(output.correlations),
        code=code_hash("agreement"),
    shell:
        "lipsync --log-file {log:q} agreement --summaries {input.summaries:q}"
        " --generated {input.generated:q} --test-set {input.test_set:q}"
        " --output-dir {params.output_dir:q} --heat-map {output.heat_map:q}"
        " --strip {output.strip:q} --progress {output.progress:q}"
        " --options {params.options:q}"
