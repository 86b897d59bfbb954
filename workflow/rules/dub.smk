"""Dubbing: each pair of dub.pairs (a face, an audio track, a trained run) as a lip-synced MP4,
and other systems' videos (evaluate.external) scored like the runs."""


rule dub:
    input:
        face=lambda w: _media_input(DUB_PAIRS[w.name]["face"]),
        audio=lambda w: _media_input(DUB_PAIRS[w.name]["audio"]),
        generator=lambda w: _generator(DUB_PAIRS[w.name]["run"]),
        weights=s3fd_weights(),
    output:
        video="results/dubbed/{name}.mp4",
        record="results/dubbed/{name}.json",
        strip=report(
            "results/dubbed/{name}.png",
            caption="../report/dubbed.rst",
            category="Dubbed videos",
            labels={"pair": "{name}"},
        ),
    log:
        "results/logs/dub/{name}.log",
    conda:
        "../../envs/lipsync.yaml"
    threads: 1
    resources:
        gpu=lambda w: 0 if DUB_PAIRS[w.name]["run"] == "identity" else 1,
        mem_mb=8000,
        runtime=60,
    params:
        generator=lambda w, input: input.generator or "identity",
        face=lambda w: _media_argument(DUB_PAIRS[w.name]["face"]),
        audio=lambda w: _media_argument(DUB_PAIRS[w.name]["audio"]),
        options=lambda w: dub_options(),
        code=code_hash("dub"),
    shell:
        "lipsync --log-file {log:q} dub --generator {params.generator:q} --face {params.face:q}"
        " --audio {params.audio:q} --output {output.video:q} --sidecar {output.record:q}"
        " --strip {output.strip:q} --options {params.options:q}"


rule score_external:
    input:
        generated=lambda w: EXTERNAL[w.name]["generated"],
        reference=lambda w: EXTERNAL[w.name]["reference"],
        weights=metric_inputs() + s3fd_weights(),
    output:
        scores="results/metrics/external-{name}/scores.tsv",
        clips="results/metrics/external-{name}/clips.tsv",
        summary="results/metrics/external-{name}/summary.json",
        videos="results/metrics/external-{name}/videos.tsv",
    log:
        "results/logs/score/external-{name}.log",
    conda:
        "../../envs/lipsync.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    params:
        output_dir=lambda w, output: os.path.dirname(output.summary),
        options=lambda w: external_options(),
        files=lambda w: _folder_fingerprint(EXTERNAL[w.name]["generated"])
        + _folder_fingerprint(EXTERNAL[w.name]["reference"]),
        code=code_hash("score-videos", metric_modules(scored_metrics())),
    shell:
        "lipsync --log-file {log:q} score-videos --generated {input.generated:q}"
        " --reference {input.reference:q} --output {params.output_dir:q}"
        " --name external-{wildcards.name} --threads {threads} --options {params.options:q}"


# results/metrics/external-{name}/ also matches the merge_scores rule's results/metrics/{run}/.
ruleorder: score_external > merge_scores
