"""Report: the paper's tables and figures, all collected by `snakemake --report`."""


localrules:
    tables,


rule tables:
    input:
        expand("results/metrics/{run}/summary.json", run=evaluated_runs())
        + external_summaries(),
    output:
        expand("results/tables/{table}.{ext}", table=TABLES, ext=["csv", "tex"]),
        [
            report(
                f"results/tables/{table}.md",
                caption=f"../report/table_{table}.rst",
                category="Tables",
            )
            for table in TABLES
        ],
        "results/tables/summary.md",
    log:
        "results/logs/tables.log",
    conda:
        "../../envs/lipsync.yaml"
    params:
        output_dir=lambda w, output: os.path.dirname(output[0]),
        code=code_hash("tables"),
    shell:
        "lipsync --log-file {log:q} tables --summaries {input:q} --output-dir {params.output_dir:q}"


rule figures:
    input:
        test_set="results/datasets/test.h5",
        generated=expand("results/generated/{run}.h5", run=evaluated_runs()),
        scores=expand("results/metrics/{run}/scores.tsv", run=evaluated_runs()),
    output:
        qualitative=report(
            "results/figures/qualitative.png",
            caption="../report/qualitative.rst",
            category="Figures",
        ),
        distributions=report(
            "results/figures/distributions.png",
            caption="../report/distributions.rst",
            category="Figures",
        ),
    log:
        "results/logs/figures.log",
    conda:
        "../../envs/lipsync.yaml"
    params:
        options=section("report"),
        code=code_hash("figures"),
    shell:
        "lipsync --log-file {log:q} figures --test-set {input.test_set:q} --generated {input.generated:q}"
        " --scores {input.scores:q} --qualitative {output.qualitative:q}"
        " --distributions {output.distributions:q} --options {params.options:q}"
