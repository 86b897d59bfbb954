"""Corpus in: GRID downloads, a local GRID folder, or the synthetic demo corpus; model weights."""

SOURCE = config["data"]["source"]


localrules:
    download_s3fd,
    download_inception,


if SOURCE == "grid":
    # How to transfer (retries, time-outs) is not a param: changing it must not re-download GRID.
    GRID_TRANSFER = json.dumps(
        {key: config["data"]["grid"][key] for key in ("retries", "timeout_seconds")}
    )

    localrules:
        download_grid,

    rule download_grid:
        output:
            manifest="results/corpus/{speaker}.tsv",
        log:
            "results/logs/download_grid/{speaker}.log",
        retries: 2
        conda:
            "../../envs/lipsync.yaml"
        params:
            root=corpus_root(),
            options=lambda w: options(
                base_url=config["data"]["grid"]["base_url"],
                mirror_url=config["data"]["grid"]["mirror_url"],
                audio=config["data"]["audio"],
                max_clips_per_speaker=config["data"]["max_clips_per_speaker"],
            ),
            code=code_hash("download-grid"),
        shell:
            "lipsync --log-file {log:q} download-grid --speaker {wildcards.speaker} --root {params.root:q}"
            " --manifest {output.manifest:q} --options {params.options:q}"
            " --transfer {GRID_TRANSFER:q}"

elif SOURCE == "local":

    rule scan_local:
        output:
            manifest="results/corpus/{speaker}.tsv",
        log:
            "results/logs/scan_local/{speaker}.log",
        conda:
            "../../envs/lipsync.yaml"
        params:
            root=corpus_root(),
            # The clip list is part of the params: adding a clip reruns only its speaker's jobs.
            clips=lambda w: ",".join(local_clips(w.speaker)),
            options=lambda w: options(
                audio=config["data"]["audio"],
                max_clips_per_speaker=config["data"]["max_clips_per_speaker"],
            ),
            code=code_hash("scan-local"),
        shell:
            "lipsync --log-file {log:q} scan-local --speaker {wildcards.speaker} --root {params.root:q}"
            " --manifest {output.manifest:q} --options {params.options:q}"

else:

    rule synthesize:
        output:
            manifest="results/corpus/{speaker}.tsv",
        log:
            "results/logs/synthesize/{speaker}.log",
        conda:
            "../../envs/lipsync.yaml"
        params:
            root=corpus_root(),
            options=lambda w: options(
                **config["data"]["synthetic"],
                clips_per_speaker=clip_count(w.speaker),
                fps=config["video"]["fps"],
                frames_per_clip=config["video"]["frames_per_clip"],
            ),
            code=code_hash("synthesize"),
        shell:
            "lipsync --log-file {log:q} synthesize --speaker {wildcards.speaker} --root {params.root:q}"
            " --manifest {output.manifest:q} --options {params.options:q}"


rule download_s3fd:
    output:
        config["faces"]["s3fd_weights"],
    log:
        "results/logs/download_s3fd.log",
    retries: 2
    conda:
        "../../envs/lipsync.yaml"
    params:
        url=config["faces"]["s3fd_url"],
        sha256=config["faces"]["s3fd_sha256"] or "",
    shell:
        "lipsync --log-file {log:q} download-weights --url {params.url:q} --output {output:q}"
        " $( [ -n '{params.sha256}' ] && echo --sha256 {params.sha256} )"


rule download_inception:
    output:
        config["evaluate"]["fid"]["weights"],
    log:
        "results/logs/download_inception.log",
    retries: 2
    conda:
        "../../envs/lipsync.yaml"
    params:
        url=config["evaluate"]["fid"]["url"],
        sha256=config["evaluate"]["fid"]["sha256"] or "",
    shell:
        "lipsync --log-file {log:q} download-weights --url {params.url:q} --output {output:q}"
        " $( [ -n '{params.sha256}' ] && echo --sha256 {params.sha256} )"
