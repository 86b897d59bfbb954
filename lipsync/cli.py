"""The `lipsync` command line: one subcommand per workflow step, each a thin call into the package.

Options travel as JSON (`--options '{"...": ...}'`): the exact config section a rule passes in its
`params:`, so a rerun happens precisely when that section changes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from lipsync.core import logs
from lipsync.core.errors import LipsyncError

_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable]] = {}


def command(name: str, help: str):
    """Register `run(args)` as subcommand `name`; `arguments(parser)` declares its options."""

    def wrap(arguments):
        def register(run):
            _COMMANDS[name] = (help, arguments, run)
            return run

        return register

    return wrap


def _options(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--options is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--options must be a JSON object")
    return value


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--options", type=_options, default={}, help="config section as JSON")


# --- corpus ------------------------------------------------------------------------------------


def _corpus_arguments(parser):
    parser.add_argument("--speaker", required=True)
    parser.add_argument("--root", required=True, help="folder the corpus is written to or read from")
    parser.add_argument("--manifest", required=True, help="output TSV, one row per clip")
    _add_options(parser)


def _download_grid_arguments(parser):
    _corpus_arguments(parser)
    parser.add_argument("--transfer", type=_options, default={},
                        help="retries and timeout_seconds as JSON (how, not what, to download)")


@command("download-grid", "download one GRID speaker, verify and unpack it")(
    _download_grid_arguments)
def _download_grid(args):
    from lipsync.data import grid

    grid.download_speaker(args.speaker, args.root, args.manifest,
                          **{**args.options, **args.transfer})


@command("scan-local", "list one speaker's clips in a GRID folder already on disk")(_corpus_arguments)
def _scan_local(args):
    from lipsync.data import local

    local.write_manifest(args.speaker, args.root, args.manifest, **args.options)


@command("synthesize", "make one speaker of the synthetic demo corpus")(_corpus_arguments)
def _synthesize(args):
    from lipsync.data import synthetic

    synthetic.make_speaker(args.speaker, args.root, args.manifest, **args.options)


def _download_arguments(parser):
    parser.add_argument("--url", required=True)
    parser.add_argument("--sha256", default=None)
    parser.add_argument("--output", required=True)


@command("download-weights", "fetch model weights (S3FD, Inception) to a local file")(_download_arguments)
def _download_weights(args):
    from lipsync.data import download

    download.fetch(args.url, args.output, sha256=args.sha256)


# --- preprocessing -------------------------------------------------------------------------------


def _shard_arguments(parser):
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--shard", type=int, required=True)
    parser.add_argument("--shard-size", type=int, required=True)
    parser.add_argument("--output", required=True)
    _add_options(parser)


def _faces_arguments(parser):
    _shard_arguments(parser)
    parser.add_argument("--coverage", required=True, help="output TSV of face coverage per clip")
    parser.add_argument("--threads", type=int, default=1)


@command("faces", "detect, smooth and crop faces for one speaker shard")(_faces_arguments)
def _faces(args):
    from lipsync.data import faces

    faces.extract_shard(args.manifest, args.shard, args.shard_size, args.output, args.coverage,
                        options=args.options, threads=args.threads)


@command("mels", "compute LipGAN mel spectrograms for one speaker shard")(_shard_arguments)
def _mels(args):
    from lipsync.data import audio

    audio.compute_shard(args.manifest, args.shard, args.shard_size, args.output,
                        options=args.options)


def _splits_arguments(parser):
    parser.add_argument("--coverage", nargs="+", required=True)
    parser.add_argument("--mels", nargs="+", required=True)
    parser.add_argument("--output-dir", required=True)
    _add_options(parser)


@command("splits", "choose GRIDSmall, GRIDFull and GRIDTest clips")(_splits_arguments)
def _splits(args):
    from lipsync.data import splits

    splits.write_splits(args.coverage, args.mels, args.output_dir, options=args.options)


def _pack_arguments(parser):
    parser.add_argument("--split", required=True, help="split name (small, full, test)")
    parser.add_argument("--clips", required=True, help="the split's clip list (TSV)")
    parser.add_argument("--faces", nargs="+", required=True)
    parser.add_argument("--mels", nargs="+", required=True)
    parser.add_argument("--output", required=True)
    _add_options(parser)


@command("pack", "pack one split's crops, mels and sample index into HDF5")(_pack_arguments)
def _pack(args):
    from lipsync.data import pack

    pack.pack_split(args.split, args.clips, args.faces, args.mels, args.output,
                    options=args.options)


def _words_arguments(parser):
    parser.add_argument("--manifest", required=True, help="corpus/{speaker}.tsv")
    parser.add_argument("--output", required=True, help="alignments/{speaker}.tsv")


@command("words", "one speaker's GRID word alignments as a word table (slot, word, times)")(
    _words_arguments)
def _words(args):
    from lipsync.data import alignments

    alignments.write_words(args.manifest, args.output)


def _contact_sheet_arguments(parser):
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--max-clips", type=int, default=8)


@command("contact-sheet", "write a PNG contact sheet of a dataset's crops")(_contact_sheet_arguments)
def _contact_sheet(args):
    from lipsync.data import sheets

    sheets.dataset_contact_sheet(args.dataset, args.output, max_clips=args.max_clips)


def _pack_subset_arguments(parser):
    parser.add_argument("--root", required=True, help="local GRID copy, e.g. ../shared/grid-s1")
    parser.add_argument("--speaker", default="s1")
    parser.add_argument("--output", required=True, help="folder for train.h5 and test.h5")
    parser.add_argument("--train-clips", type=int, default=None,
                        help="default: lipsync.data.subset.DEFAULTS")
    parser.add_argument("--test-clips", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    _add_options(parser)


@command("pack-subset", "pack a compact train/test subset of one speaker (benchmarks/gpu.py)")(
    _pack_subset_arguments
)
def _pack_subset(args):
    from lipsync.data import subset

    counts = {k: v for k, v in (("train_clips", args.train_clips),
                                ("test_clips", args.test_clips)) if v is not None}
    subset.pack_subset(args.root, args.output, speaker=args.speaker, options=args.options,
                       threads=args.threads, **counts)


# --- training and generation --------------------------------------------------------------------


def _train_arguments(parser):
    parser.add_argument("--train-set", required=True)
    parser.add_argument("--validation-set", default=None)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--output", required=True, help="final generator checkpoint")
    parser.add_argument("--snapshots-dir", default=None,
                        help="copy the run's snapshot generators here as {k}.pt")
    parser.add_argument("--threads", type=int, default=1, help="DataLoader workers follow this")
    _add_options(parser)


@command("train", "train one model on one training set (resumes from its newest checkpoint)")(
    _train_arguments
)
def _train(args):
    from lipsync.training import loop

    loop.train_run(args.train_set, args.run_dir, args.output, options=args.options,
                   validation_set=args.validation_set, threads=args.threads,
                   snapshots_dir=args.snapshots_dir)


def _train_syncnet_arguments(parser):
    parser.add_argument("--train-set", required=True, help="packed training split (full.h5)")
    parser.add_argument("--output", required=True,
                        help="expert file; checkpoints and log.jsonl go beside it (expert/)")
    parser.add_argument("--threads", type=int, default=1, help="DataLoader workers follow this")
    _add_options(parser)


@command("train-syncnet", "train the SyncNet expert of the LSE metrics (resumes)")(
    _train_syncnet_arguments)
def _train_syncnet(args):
    from lipsync.experts.sync import train

    train.train_expert(args.train_set, args.output, options=args.options, threads=args.threads)


def _train_lipreader_arguments(parser):
    parser.add_argument("--train-set", required=True, help="packed training split (full.h5)")
    parser.add_argument("--words", nargs="+", required=True,
                        help="alignments/{speaker}.tsv word tables (lipsync words)")
    parser.add_argument("--output", required=True,
                        help="lip reader file; checkpoints and log.jsonl go beside it")
    parser.add_argument("--threads", type=int, default=1)
    _add_options(parser)


@command("train-lipreader", "train the GRID lip reader of the wer/cer metrics (resumes)")(
    _train_lipreader_arguments)
def _train_lipreader(args):
    from lipsync.experts.lipread import train

    train.train_lipreader(args.train_set, args.words, args.output, options=args.options,
                          threads=args.threads)


def _generate_arguments(parser):
    parser.add_argument("--generator", required=True, help="generator checkpoint, or 'identity'")
    parser.add_argument("--test-set", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--sheet", default=None, help="PNG sample sheet")
    parser.add_argument("--threads", type=int, default=1)
    _add_options(parser)


@command("generate", "run a generator over the test set's fixed inputs")(_generate_arguments)
def _generate(args):
    from lipsync.tools import generate

    generate.generate(args.generator, args.test_set, args.output, sheet=args.sheet,
                      options=args.options, threads=args.threads)


# --- evaluation and report ----------------------------------------------------------------------


def _reference_arguments(parser):
    parser.add_argument("--metric", required=True, help="registered metric name (fid, lmd, ...)")
    parser.add_argument("--test-set", required=True)
    parser.add_argument("--output", required=True, help="reference data (.npz)")
    parser.add_argument("--threads", type=int, default=1)
    _add_options(parser)


@command("metric-reference", "a metric's work on the real test faces, computed once")(
    _reference_arguments)
def _metric_reference(args):
    from lipsync.metrics import score

    score.write_reference(args.metric, args.test_set, args.output, options=args.options,
                          threads=args.threads)


def _named_path(text: str) -> tuple[str, str]:
    name, separator, path = text.partition("=")
    if not separator or not name or not path:
        raise argparse.ArgumentTypeError(f"expected METRIC=PATH, got {text!r}")
    return name, path


def _score_arguments(parser):
    parser.add_argument("--generated", required=True)
    parser.add_argument("--test-set", required=True)
    parser.add_argument("--reference", type=_named_path, action="append", default=[],
                        metavar="METRIC=PATH", help="reference data of a metric (repeatable)")
    parser.add_argument("--scores", required=True, help="per-frame scores TSV")
    parser.add_argument("--clip-scores", required=True, help="per-clip scores TSV")
    parser.add_argument("--summary", required=True, help="JSON of every metric")
    parser.add_argument("--threads", type=int, default=1)
    _add_options(parser)


@command("score", "every configured metric of one generated test set")(_score_arguments)
def _score(args):
    from lipsync.metrics import score

    score.score_run(args.generated, args.test_set, dict(args.reference), args.scores,
                    args.clip_scores, args.summary, options=args.options, threads=args.threads)


def _score_metric_arguments(parser):
    parser.add_argument("--metric", required=True, help="registered metric name (fid, lmd, ...)")
    parser.add_argument("--generated", required=True)
    parser.add_argument("--test-set", required=True)
    parser.add_argument("--reference", type=_named_path, action="append", default=[],
                        metavar="METRIC=PATH", help="reference data of a metric (repeatable)")
    parser.add_argument("--output", required=True,
                        help="the metric's result (.json); its rows go beside it (.tsv)")
    parser.add_argument("--threads", type=int, default=1)
    _add_options(parser)


@command("score-metric", "one metric of one generated test set (merge-scores joins them)")(
    _score_metric_arguments)
def _score_metric(args):
    from pathlib import Path

    from lipsync.metrics import score

    output = Path(args.output)
    score.score_metric(args.generated, args.test_set, args.metric, dict(args.reference), output,
                       output.with_suffix(".tsv"), options=args.options, threads=args.threads)


def _merge_scores_arguments(parser):
    parser.add_argument("--parts", nargs="+", required=True,
                        help="score-metric results (.json, rows beside), in metric order")
    parser.add_argument("--test-set", required=True)
    parser.add_argument("--scores", required=True, help="per-frame scores TSV")
    parser.add_argument("--clip-scores", required=True, help="per-clip scores TSV")
    parser.add_argument("--summary", required=True, help="JSON of every metric")


@command("merge-scores", "join one system's metric results into scores, clips and summary")(
    _merge_scores_arguments)
def _merge_scores(args):
    from lipsync.metrics import score

    score.merge_scores(args.parts, args.test_set, args.scores, args.clip_scores, args.summary)


def _tables_arguments(parser):
    parser.add_argument("--summaries", nargs="+", required=True, help="metrics/{run}/summary.json")
    parser.add_argument("--output-dir", required=True)
    _add_options(parser)


@command("tables", "the paper's tables as CSV, Markdown and LaTeX")(_tables_arguments)
def _tables(args):
    from lipsync.report import tables

    tables.write_tables(args.summaries, args.output_dir, options=args.options)


def _figures_arguments(parser):
    parser.add_argument("--test-set", required=True)
    parser.add_argument("--generated", nargs="+", required=True, help="generated/{run}.h5")
    parser.add_argument("--scores", nargs="+", required=True, help="metrics/{run}/scores.tsv")
    parser.add_argument("--qualitative", required=True, help="output PNG")
    parser.add_argument("--distributions", required=True, help="output PNG")
    _add_options(parser)


@command("figures", "qualitative figure and per-frame metric distributions")(_figures_arguments)
def _figures(args):
    from lipsync.report import figures

    figures.write_figures(args.test_set, args.generated, args.scores, args.qualitative,
                          args.distributions, options=args.options)


def _dub_arguments(parser):
    parser.add_argument("--generator", required=True, help="generator file, or 'identity'")
    parser.add_argument("--face", required=True, help="face video or photo (anything PyAV reads)")
    parser.add_argument("--audio", required=True, help="audio file or a video with a sound track")
    parser.add_argument("--output", required=True, help="output video (.mp4, .mov or .mkv)")
    parser.add_argument("--sidecar", default=None, help="JSON record (default: OUTPUT.json)")
    parser.add_argument("--strip", default=None, help="PNG strip: input frames above dubbed ones")
    _add_options(parser)


@command("dub", "lip-sync any face video or photo to any audio")(_dub_arguments)
def _dub(args):
    from lipsync.tools import dub

    dub.dub(args.generator, args.face, args.audio, args.output, options=args.options,
            sidecar=args.sidecar)
    if args.strip:
        dub.write_strip(args.face, args.output, args.strip)


def _score_videos_arguments(parser):
    parser.add_argument("--generated", required=True, help="folder of generated videos")
    parser.add_argument("--reference", required=True, help="folder of reference videos")
    parser.add_argument("--output", required=True, help="folder for the HDF5 sets and scores")
    # Not --run: args.run is the subcommand's function (see build_parser).
    parser.add_argument("--name", default=None, help="row name (default: the generated folder's)")
    parser.add_argument("--threads", type=int, default=1)
    _add_options(parser)


@command("score-videos", "score another system's videos against reference videos")(
    _score_videos_arguments)
def _score_videos(args):
    from lipsync.tools import score_videos

    score_videos.score_videos(args.generated, args.reference, args.output,
                              options=args.options, run=args.name, threads=args.threads)


# --- analysis: metric sensitivity and agreement ----------------------------------------------


def _defect_arguments(parser):
    parser.add_argument("--test-set", required=True)
    parser.add_argument("--kind", required=True, help="desync, frozen, blur, jpeg, noise, colour, "
                                                      "jitter, flicker, content_swap")
    parser.add_argument("--strength", type=float, required=True)
    parser.add_argument("--output", required=True, help="generated/defect-{kind}-{strength}.h5")
    parser.add_argument("--words", nargs="*", default=[],
                        help="alignments/{speaker}.tsv word tables (content_swap reads them)")


@command("defect", "the real test faces with one controlled defect (a scored system)")(
    _defect_arguments)
def _defect(args):
    from lipsync.analysis import defects

    defects.make_defect_set(args.test_set, args.kind, args.strength, args.output,
                            words=args.words)


def _sensitivity_arguments(parser):
    parser.add_argument("--summaries", nargs="+", required=True,
                        help="metrics/{system}/summary.json of the real faces and defect sets")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--figure", required=True)


@command("sensitivity", "which metric notices which defect: table and figure")(
    _sensitivity_arguments)
def _sensitivity(args):
    from lipsync.analysis import sensitivity

    sensitivity.write_sensitivity(args.summaries, args.output_dir, args.figure)


def _agreement_arguments(parser):
    parser.add_argument("--summaries", nargs="+", required=True,
                        help="metrics/{system}/summary.json (scores.tsv and clips.tsv beside)")
    parser.add_argument("--generated", nargs="+", required=True, help="generated/{system}.h5")
    parser.add_argument("--test-set", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--heat-map", required=True)
    parser.add_argument("--strip", required=True)
    parser.add_argument("--progress", default=None, help="metrics over training (PNG)")
    _add_options(parser)


@command("agreement", "rank agreement between metrics, within runs and across systems")(
    _agreement_arguments)
def _agreement(args):
    from lipsync.analysis import agreement

    agreement.write_agreement(args.summaries, args.output_dir, heat_map_png=args.heat_map,
                              strip_png=args.strip, test_set=args.test_set,
                              generated_paths=args.generated, progress_png=args.progress,
                              options=args.options)


# --- entry point --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lipsync", description=__doc__.splitlines()[0])
    parser.add_argument("--log-file", default=None,
                        help="also append log records to this file (rank 0 only)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (help, arguments, run) in _COMMANDS.items():
        sub = subparsers.add_parser(name, help=help, description=help)
        arguments(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(args.log_file)
    try:
        args.run(args)
    except LipsyncError as error:
        logs.get_logger("lipsync").error("%s", error)
        print(f"lipsync {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
