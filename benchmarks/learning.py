"""Does training help? Each model trained for the same number of generator steps, scored on held-out
faces (L1, SSIM, PSNR) beside the identity copy, with learning curves, as JSON and a PNG figure.

Usage: python benchmarks/learning.py --train-set results/datasets/small.h5
       --test-set results/datasets/test.h5 --generator-steps 1000 --output benchmarks/results/s1
       [--models lipgan l1wgan_gp wgan_gp l1wgan_gp:n_critic=1] [--width 0.25] [--batch-size 16]
       python benchmarks/learning.py --table benchmarks/results/s1/learning.json   # README table
       python benchmarks/learning.py --combine a/learning.json b/learning.json --output OUT
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lipsync.core.errors import LipsyncError
from lipsync.core.io import atomic_path, write_json, write_text
from lipsync.core.progress import progress
from lipsync.data.dataset import LipSyncDataset
from lipsync.models import registry
from lipsync.training.checkpoint import load_generator
from lipsync.training.loop import evaluate, training_loop, validation_subset

# Losses of log.jsonl kept per logged point (the WGAN-GP diagnostics and both models' L1 term).
LOSS_KEYS = ("g_l1", "g_adversarial", "g_loss", "c_loss", "wasserstein", "gradient_penalty",
             "d_negative", "d_real")


def parse_run(spec: str) -> tuple[str, str, dict]:
    """`model[:key=value[:key=value...]]` -> (label, model, model options), e.g.
    `l1wgan_gp:n_critic=1:l1_weight=10`; values are read as JSON (numbers, lists)."""
    model, *pairs = spec.split(":")
    table = registry.option_table(model)  # unknown model: LipsyncError naming it
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in table:
            raise LipsyncError(f"--models {spec!r}: {pair!r} is not KEY=VALUE with a KEY of "
                               f"{model}'s options ({', '.join(table)})")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return spec.replace(":", " "), model, options


def generator_step_batches(model: str, options: dict) -> int:
    """Batches per generator update: n_critic for the WGAN-GP schemes, 1 for LipGAN."""
    return int(registry.resolve_options(model, options).get("n_critic", 1))


def train_run(*, label: str, model: str, model_options: dict, train_set: str, monitor,
              run_dir: Path, generator_steps: int, curve_points: int, batch_size: int,
              workers: int, max_seconds: float | None) -> dict:
    """Train to `generator_steps` in `curve_points` chunks, each resuming the last and ending with
    a validation on `monitor`; stops early (after a chunk) once `max_seconds` have passed."""
    per_step = generator_step_batches(model, model_options)
    chunk_steps = max(1, generator_steps // curve_points)
    # One record of losses per 1/50 of the run: enough points for the diagnostic curves.
    log_samples = batch_size * per_step * max(1, generator_steps // 50)
    # Wall time accumulates over invocations (a run extended to more steps, or resumed after a
    # stop, reports its whole training time), kept beside the run's checkpoints.
    wall_file = run_dir / "wall_seconds.json"
    earlier = json.loads(wall_file.read_text())["seconds"] if wall_file.is_file() else 0.0
    start = time.perf_counter()
    steps, result = 0, None
    targets = sorted({min(generator_steps, k * chunk_steps)
                      for k in range(1, curve_points + 2)})
    for target in progress(targets, desc=f"train {label}", unit="chunk"):
        result = training_loop(
            train_set=train_set, validation_set=monitor, run_dir=run_dir, model=model,
            model_options=model_options, batch_size=batch_size,
            total_samples=target * per_step * batch_size,
            checkpoint_every_samples=chunk_steps * per_step * batch_size,
            # validation only where each chunk ends (training_loop validates on return)
            validation_every_samples=10 * generator_steps * per_step * batch_size,
            validation_samples=0, log_every_samples=log_samples, num_workers=workers,
            progress_bar=False, keep_checkpoints=1)
        steps = target
        write_json(wall_file, {"seconds": earlier + time.perf_counter() - start})
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return {"label": label, "model": model, "model_options": model_options,
            "batches_per_generator_step": per_step, "generator_steps": steps,
            "batches": steps * per_step, "samples": steps * per_step * batch_size,
            "wall_seconds": round(earlier + time.perf_counter() - start, 1),
            "output": result["output"], "curve": _curve(records, per_step),
            "losses": _losses(records, per_step)}


def _curve(records: list[dict], per_step: int) -> list[dict]:
    # A resumed chunk may re-log a point: the last record of a step wins.
    points = {r["step"] // per_step: {"generator_step": r["step"] // per_step,
                                       **{k: r[f"validation_{k}"] for k in ("l1", "ssim", "psnr")}}
              for r in records if "validation_ssim" in r}
    return [points[k] for k in sorted(points)]


def _losses(records: list[dict], per_step: int) -> list[dict]:
    # A run resumed from a checkpoint logs its steps since that checkpoint again: the last wins.
    points = {r["step"]: {"generator_step": r["step"] / per_step,
                          **{k: r[k] for k in LOSS_KEYS if k in r}}
              for r in records if "samples_per_second" in r}
    return [points[k] for k in sorted(points)]


def figure(results: dict, path: Path) -> None:
    """Validation L1 and SSIM against generator steps (identity copy dashed), training L1 term,
    and the critic's Wasserstein estimate and gradient penalty of the WGAN-GP runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    identity = results["identity"]
    panels = [(axes[0, 0], "l1", "validation L1"), (axes[0, 1], "ssim", "validation SSIM")]
    for axis, key, title in panels:
        for i, run in enumerate(results["runs"]):
            curve = run["curve"]
            axis.plot([p["generator_step"] for p in curve], [p[key] for p in curve], "o-",
                      color=f"C{i}", label=run["label"])
        axis.axhline(identity[key], color="k", linestyle="--", label="identity copy")
        axis.set(title=title, xlabel="generator steps")
    axes[0, 0].legend(fontsize=8)
    for i, run in enumerate(results["runs"]):  # one colour per run in every panel
        losses = run["losses"]
        axes[1, 0].plot([p["generator_step"] for p in losses], [p.get("g_l1") for p in losses],
                        color=f"C{i}", label=run["label"])
        if any("wasserstein" in p for p in losses):
            steps = [p["generator_step"] for p in losses]
            axes[1, 1].plot(steps, [p["wasserstein"] for p in losses], color=f"C{i}",
                            label=f"{run['label']}: W estimate")
            axes[1, 1].plot(steps, [p["gradient_penalty"] for p in losses], ":", color=f"C{i}",
                            label=f"{run['label']}: GP")
    axes[1, 0].set(title="training L1 term", xlabel="generator steps", yscale="log")
    axes[1, 1].set(title="critic: Wasserstein estimate, gradient penalty",
                   xlabel="generator steps", yscale="symlog")
    axes[1, 0].legend(fontsize=8)
    if axes[1, 1].lines:  # only WGAN-GP runs have a critic
        axes[1, 1].legend(fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def markdown_table(results: dict) -> str:
    """The README's table: identity copy and each run, L1 / SSIM / PSNR on the held-out set."""
    s = results["settings"]
    lines = [f"{s['test_samples']} held-out samples; width {s['width']}, batch {s['batch_size']}, "
             f"learning rate {s['learning_rate']}, {s['device']}:", "",
             "| | generator steps | batches | wall (min) | L1 | SSIM | PSNR (dB) |",
             "|---|---|---|---|---|---|---|"]
    i = results["identity"]
    lines.append(f"| identity copy (reference frame) | | | | {i['l1']:.4f} | {i['ssim']:.3f} "
                 f"| {i['psnr']:.1f} |")
    for run in results["runs"]:
        f = run["final"]
        short = " (stopped short)" if run["generator_steps"] < s["generator_steps"] else ""
        lines.append(f"| {run['label']} | {run['generator_steps']:,}{short} | {run['batches']:,} "
                     f"| {run['wall_seconds'] / 60:.0f} | {f['l1']:.4f} | {f['ssim']:.3f} "
                     f"| {f['psnr']:.1f} |")
    return "\n".join(lines) + "\n"


def combine(paths: list[str], output: Path) -> dict:
    """One study from several results JSONs (runs trained side by side as separate processes):
    their settings must agree except for the models; writes learning.json, the figure and the
    table to `output`."""
    parts = [json.loads(Path(path).read_text()) for path in paths]
    results = {**parts[0], "runs": [run for part in parts for run in part["runs"]]}

    def same(settings: dict) -> dict:  # a time limit stops a run; each run says how far it got
        return {k: v for k, v in settings.items() if k != "max_minutes_per_run"}

    for path, part in zip(paths[1:], parts[1:], strict=True):
        if (same(part["settings"]) != same(parts[0]["settings"])
                or part["identity"] != parts[0]["identity"]):
            raise LipsyncError(f"{path}: settings or held-out set differ from {paths[0]}'s")
    results["settings"]["max_minutes_per_run"] = [p["settings"].get("max_minutes_per_run")
                                                  for p in parts]
    write_results(results, output)
    return results


def write_results(results: dict, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "learning.json", results)
    figure(results, output / "learning_curves.png")
    write_text(output / "table.md", markdown_table(results))


def run_study(args: argparse.Namespace) -> dict:
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    runs = [parse_run(spec) for spec in args.models]
    test = LipSyncDataset(args.test_set, fixed_reference=True)
    held_out = validation_subset(test, args.test_samples)
    monitor = validation_subset(test, args.curve_samples)
    identity = evaluate(None, held_out, device=device)
    output, work = Path(args.output), Path(args.work_dir)
    output.mkdir(parents=True, exist_ok=True)
    results = {"settings": {"train_set": args.train_set, "test_set": args.test_set,
                            "test_samples": identity["samples"],
                            "curve_samples": len(monitor), "width": args.width,
                            "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                            "generator_steps": args.generator_steps, "device": device.type,
                            "threads": torch.get_num_threads(),
                            "max_minutes_per_run": args.max_minutes},
               "identity": identity, "runs": []}
    print(f"identity copy: L1 {identity['l1']:.4f}  SSIM {identity['ssim']:.4f}  "
          f"PSNR {identity['psnr']:.2f} dB on {identity['samples']} samples", flush=True)
    for label, model, options in runs:
        options = {"width": args.width, "learning_rate": args.learning_rate, **options}
        run = train_run(label=label, model=model, model_options=options,
                        train_set=args.train_set, monitor=monitor,
                        run_dir=work / label.replace(" ", "_"),
                        generator_steps=args.generator_steps, curve_points=args.curve_points,
                        batch_size=args.batch_size, workers=args.workers,
                        max_seconds=args.max_minutes * 60 if args.max_minutes else None)
        generator, _ = load_generator(run.pop("output"), device)
        run["final"] = evaluate(generator, held_out, device=device)
        results["runs"].append(run)
        f = run["final"]
        print(f"{label}: {run['generator_steps']} generator steps ({run['batches']} batches) in "
              f"{run['wall_seconds']:.0f} s: L1 {f['l1']:.4f}  SSIM {f['ssim']:.4f}  "
              f"PSNR {f['psnr']:.2f} dB", flush=True)
        # written after every run, so a study stopped part-way keeps what finished
        write_results(results, output)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-set", default="results/datasets/small.h5")
    parser.add_argument("--test-set", default="results/datasets/test.h5",
                        help="held-out set scored at the end (and its --curve-samples subset "
                             "for the learning curves)")
    parser.add_argument("--generator-steps", type=int, default=1000,
                        help="generator updates per model (a WGAN-GP step is n_critic batches)")
    parser.add_argument("--models", nargs="+", default=["lipgan", "l1wgan_gp", "wgan_gp"],
                        help="MODEL or MODEL:KEY=VALUE[:KEY=VALUE] (model options)")
    # 0.5: at 0.125 no model passes the identity copy in 200 generator steps; at 0.5 LipGAN
    # does (docs/learning.md).
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=16)
    # A thousand steps on CPU: Keras' default Adam rate (1e-3, what LipGAN falls back to without
    # --lr) gets somewhere in them; the paper's 1e-4 needs many more.
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--test-samples", type=int, default=0, help="0: every held-out sample")
    parser.add_argument("--curve-samples", type=int, default=256)
    parser.add_argument("--curve-points", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop a run after the chunk that passes this (it says how far it got)")
    parser.add_argument("--output", default="benchmarks/results/s1")
    parser.add_argument("--work-dir", default="results/learning",
                        help="run folders (checkpoints, log.jsonl); a rerun resumes them")
    parser.add_argument("--table", metavar="JSON", help="print the README table of a results "
                        "JSON and exit")
    parser.add_argument("--combine", nargs="+", metavar="JSON", help="merge the runs of these "
                        "results JSONs into --output and exit")
    args = parser.parse_args()
    if args.combine:
        combine(args.combine, Path(args.output))
        return
    if args.table:
        print(markdown_table(json.loads(Path(args.table).read_text())), end="")
        return
    run_study(args)


if __name__ == "__main__":
    main()
