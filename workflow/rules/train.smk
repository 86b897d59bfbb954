"""Training: one GPU job per run (model x training set); checkpoints resume across retries."""


rule train:
    input:
        train_set=lambda w: f"results/datasets/{runs()[w.run]['train_set']}.h5",
        # Monitoring only: the final generator is always the one evaluated, so no selection
        # happens on the test set.
        validation_set="results/datasets/test.h5",
    output:
        generator=protected("results/train/{run}/generator.pt"),
        # training.options.snapshots intermediate generators, {k}.pt (empty when 0).
        snapshots=directory("results/train/{run}/progress"),
    log:
        "results/logs/train/{run}.log",
    benchmark:
        "results/benchmarks/train/{run}.tsv"
    conda:
        "../../envs/lipsync.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=lambda w, attempt: 24 * 60 * attempt,
    params:
        options=lambda w: run_options(w.run),
        run_dir=lambda w, output: os.path.dirname(output.generator),
        # Several GPUs: one process per GPU on the job's node, data-parallel (lipsync.training.loop).
        launcher=lambda w, resources: (
            "lipsync"
            if int(resources.gpu) <= 1
            else f"torchrun --standalone --nproc-per-node {resources.gpu} -m lipsync.cli"
        ),
        code=code_hash("train"),
    shell:
        "{params.launcher} --log-file {log:q} train --train-set {input.train_set:q}"
        " --validation-set {input.validation_set:q} --run-dir {params.run_dir:q}"
        " --output {output.generator:q} --snapshots-dir {output.snapshots:q}"
        " --threads {threads} --options {params.options:q}"


rule generate:
    input:
        generator=lambda w: generator_file(w.run),
        test_set="results/datasets/test.h5",
    output:
        faces="results/generated/{run}.h5",
        sheet=report(
            "results/generated/{run}.png",
            caption="../report/generated.rst",
            category="Generated faces",
            labels={"run": "{run}"},
        ),
    log:
        "results/logs/generate/{run}.log",
    conda:
        "../../envs/lipsync.yaml"
    threads: 2
    resources:
        gpu=lambda w: 0 if w.run in BASELINES else 1,
        mem_mb=8000,
        runtime=60,
    params:
        generator=lambda w: generator_argument(w.run),
        code=code_hash("generate"),
    shell:
        "lipsync --log-file {log:q} generate --generator {params.generator:q} --test-set {input.test_set:q}"
        " --output {output.faces:q} --sheet {output.sheet:q} --threads {threads}"
