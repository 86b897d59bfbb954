"""Fréchet Inception Distance as pytorch-fid computes it, with weights from a local file.

Protocol: pytorch-fid's FID InceptionV3 (pool3, 2048-d), RGB uint8 faces scaled to [0, 1], resized
inside the network (bilinear to 299x299, align_corners=False) and mapped to [-1, 1]; mean and
covariance as `np.mean` / `np.cov`; distance by `pytorch_fid.fid_score.calculate_frechet_distance`.
As Wav2Lip's authors do, all ground-truth frames are compared with all generated frames: the real
set is the ground truth of each test sample (faces[samples/crop[k]]), so both sets have N images.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterable
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from lipsync.core.device import pick_device
from lipsync.core.errors import InputError, LipsyncError
from lipsync.core.io import sha256_file
from lipsync.core.logs import get_logger
from lipsync.core.options import Option, defaults
from lipsync.core.progress import progress
from lipsync.metrics.base import Batch, Column, Context, Metric, Result
from lipsync.metrics.registry import register_metric
from lipsync.metrics.testset import TestSet, batches

log = get_logger(__name__)

RANDOM_WEIGHTS_LABEL = "random Inception weights: not comparable to published FIDs"
RANDOM_WEIGHTS_SEED = 0
OPTIONS = {
    "weights": Option("results/weights/pt_inception-2015-12-05-6726825d.pth", str,
                      "pytorch-fid's Inception weights on disk (rule download_inception fetches "
                      "them)."),
    "url": Option("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                  "pt_inception-2015-12-05-6726825d.pth", str, "Where the weights are fetched."),
    # published sha256 of pt_inception-2015-12-05-6726825d.pth (95,628,359 bytes; its name
    # carries the prefix, torch.hub's convention)
    "sha256": Option("6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2", str,
                     "sha256 the Inception weights must have (null: not checked); the default "
                     "is that of pt_inception-2015-12-05-6726825d.pth.", nullable=True),
    "random_weights": Option(False, bool, "A randomly initialised Inception (offline plumbing "
                             "only; scores are not comparable to published FIDs)."),
    "batch_size": Option(50, int, "Images per Inception forward pass (memory only).", minimum=1),
    "dims": Option(2048, int, "Inception feature size (pytorch-fid's blocks: 64, 192, 768 or "
                   "2048; published FIDs use 2048).", one_of=(64, 192, 768, 2048)),
}
DEFAULTS = defaults(OPTIONS)
REAL_SET = "ground truth of each test sample (faces[samples/crop[k]]), k = 0..N-1"


def settings(options: dict | None) -> dict:
    """The evaluate.fid options with the schema's defaults filled in, checked."""
    merged = {**DEFAULTS, **(options or {})}
    from pytorch_fid.inception import InceptionV3

    if merged["dims"] not in InceptionV3.BLOCK_INDEX_BY_DIM:
        raise LipsyncError(f"evaluate.fid.dims must be one of "
                           f"{sorted(InceptionV3.BLOCK_INDEX_BY_DIM)}, not {merged['dims']}")
    return merged


def _library_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("pytorch-fid")


def weights_record(options: dict | None) -> dict:
    """Which Inception weights the options select, verified: file and sha256, or random."""
    s = settings(options)
    if s["random_weights"]:
        return {"weights": "random", "seed": RANDOM_WEIGHTS_SEED}
    path = Path(s["weights"])
    if not path.is_file():
        command = f"lipsync download-weights --url {s['url']} --output {path}"
        if s["sha256"]:
            command += f" --sha256 {s['sha256']}"
        raise LipsyncError(
            f"FID Inception weights not found at {path} (config key evaluate.fid.weights). "
            f"Download them first (the URL is evaluate.fid.url): {command}")
    digest = sha256_file(path)
    if s["sha256"] and digest != s["sha256"].lower():
        raise InputError(path, f"sha256 is {digest}, but evaluate.fid.sha256 expects "
                               f"{s['sha256']}")
    return {"weights": path.name, "sha256": digest}


def protocol(options: dict | None) -> dict:
    """Everything that determines the Inception features, plus a cache key over it."""
    s = settings(options)
    record = {
        "network": "pytorch-fid FID InceptionV3 (TF inception-2015-12-05 port)",
        "layer": {64: "first max pool", 192: "second max pool", 768: "pre-aux classifier",
                  2048: "pool3 (final average pool)"}[s["dims"]],
        "dims": s["dims"],
        "input": "RGB uint8 -> float [0, 1] (x / 255) -> [-1, 1] inside the network",
        "colour_space": "RGB",
        "data_range": "[0, 1]",
        "resize": "bilinear to 299x299 inside InceptionV3 (F.interpolate, align_corners=False)",
        "statistics": "mean and covariance (np.cov, N-1) in float64",
        "real_set": REAL_SET,
        "weights": weights_record(s),
        "pytorch_fid": _library_version(),
    }
    record["key"] = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
    return record


def labels(options: dict | None) -> list[str]:
    return [RANDOM_WEIGHTS_LABEL] if settings(options)["random_weights"] else []


def _fid_inception(state_dict: dict | None) -> torch.nn.Module:
    """pytorch_fid.inception.fid_inception_v3's network, with our weights instead of a download."""
    from pytorch_fid import inception

    network = inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    network.Mixed_5b = inception.FIDInceptionA(192, pool_features=32)
    network.Mixed_5c = inception.FIDInceptionA(256, pool_features=64)
    network.Mixed_5d = inception.FIDInceptionA(288, pool_features=64)
    network.Mixed_6b = inception.FIDInceptionC(768, channels_7x7=128)
    network.Mixed_6c = inception.FIDInceptionC(768, channels_7x7=160)
    network.Mixed_6d = inception.FIDInceptionC(768, channels_7x7=160)
    network.Mixed_6e = inception.FIDInceptionC(768, channels_7x7=192)
    network.Mixed_7b = inception.FIDInceptionE_1(1280)
    network.Mixed_7c = inception.FIDInceptionE_2(2048)
    if state_dict is not None:
        network.load_state_dict(state_dict)
    else:
        # PyTorch's default conv init shrinks activations ~1e-8 by pool3 (BatchNorm in eval mode
        # is the identity here); He init keeps features at unit scale so the plumbing is exercised
        # with well-conditioned covariances.
        for module in network.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
    return network


def build_inception(options: dict | None, device: torch.device | str = "cpu") -> torch.nn.Module:
    """pytorch-fid's InceptionV3 feature extractor (eval mode) with the configured weights."""
    from pytorch_fid.inception import InceptionV3

    s = settings(options)
    weights_record(s)  # checks the file and its sha256 before anything is built
    if s["random_weights"]:
        # Seeded, and without disturbing the caller's random stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            network = _fid_inception(None)
    else:
        try:
            state_dict = torch.load(s["weights"], map_location="cpu", weights_only=True)
            network = _fid_inception(state_dict)
        except (RuntimeError, OSError, KeyError) as error:
            raise InputError(s["weights"], f"not pytorch-fid Inception weights ({error})") from None
    # InceptionV3 assembles its blocks from fid_inception_v3(); hand it our network so its own
    # block layout, resize and normalisation are used unchanged, and nothing is downloaded.
    with mock.patch("pytorch_fid.inception.fid_inception_v3", lambda: network):
        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[s["dims"]]], resize_input=True,
                            normalize_input=True)
    return model.eval().to(device)


def features(images: np.ndarray, model: torch.nn.Module, device: torch.device | str,
             batch_size: int = 50) -> np.ndarray:
    """Inception features (float32 N x dims) of uint8 N x H x W x 3 RGB images, in order."""
    out = []
    with torch.inference_mode():
        for start, stop in batches(len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start:stop])).to(device)
            batch = batch.permute(0, 3, 1, 2).float() / 255.0
            prediction = model(batch)[0]
            if prediction.shape[2:] != (1, 1):  # as pytorch-fid, for the smaller feature blocks
                prediction = torch.nn.functional.adaptive_avg_pool2d(prediction, (1, 1))
            out.append(prediction.squeeze(3).squeeze(2).float().cpu().numpy())
    return np.concatenate(out) if out else np.empty((0, 0), dtype=np.float32)


def statistics(feature_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of features, as pytorch-fid (np.mean, np.cov rowvar=False) in float64."""
    feature_rows = np.asarray(feature_rows, dtype=np.float64)
    if feature_rows.shape[0] < 2:
        raise LipsyncError(f"FID needs at least 2 images, got {feature_rows.shape[0]}")
    return feature_rows.mean(axis=0), np.cov(feature_rows, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray, *, report_warnings: bool = True) -> float:
    """pytorch-fid's Fréchet distance between two Gaussians (its numerical warnings logged unless
    `report_warnings` is false: bootstrap resamples repeat the point estimate's warning)."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            distance = float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2))
        except ValueError as error:
            raise LipsyncError(f"Fréchet distance failed: {error}") from None
    for warning in caught if report_warnings else ():
        # pytorch-fid passes sqrtm(disp=False), deprecated in SciPy 1.17: noise, not a finding.
        if not (issubclass(warning.category, DeprecationWarning) and "disp" in str(warning.message)):
            log.warning("Fréchet distance: %s", warning.message)
    return distance


def small_sample_warning(n: int, dims: int) -> str | None:
    if n >= dims:
        return None
    return (f"FID from {n} images, fewer than the {dims} feature dimensions: the covariance is "
            f"rank-deficient, the FID is biased upwards and not comparable with FIDs from "
            f"larger sets")


def image_features(batches_of_images: Iterable[np.ndarray], total: int, options: dict | None,
                   *, device: torch.device | str | None = None, desc: str = "FID features",
                   model: torch.nn.Module | None = None) -> np.ndarray:
    """Features of a stream of uint8 image batches (sample order kept)."""
    s = settings(options)
    device = pick_device(device if device is not None else "auto")
    model = model if model is not None else build_inception(s, device)
    out = []
    with progress(total=total, desc=desc, unit="img") as bar:
        for images in batches_of_images:
            out.append(features(images, model, device, s["batch_size"]))
            bar.update(len(images))
    return np.concatenate(out) if out else np.empty((0, s["dims"]), dtype=np.float32)


def inception_features(batch: Batch, context: Context, options: dict) -> np.ndarray:
    """Inception features of a batch's generated faces, computed once per batch for every metric
    that asks with the same FID settings (FID and KID share them)."""
    s = settings(options)
    key = ("inception", protocol(s)["key"])
    model = context.shared(key, lambda: build_inception(s, context.device))
    return batch.shared(key, lambda: features(batch.generated, model, context.device,
                                              s["batch_size"]))


@register_metric("fid", level="set", options=OPTIONS,
                 description="Fréchet Inception Distance, generated vs ground-truth test faces",
                 columns=(Column("fid", "Fréchet Inception Distance (pytorch-fid)",
                                 higher_is_better=False, decimals=2),))
class FID(Metric):
    """FID between the generated faces and the ground truth of the same samples."""

    @classmethod
    def protocol(cls, options: dict) -> dict:
        return protocol(options)

    @classmethod
    def inputs(cls, options: dict) -> list[str]:
        return [] if settings(options)["random_weights"] else [settings(options)["weights"]]

    @classmethod
    def reference(cls, test_set: TestSet, options: dict, *, device, threads: int = 1) -> dict:
        """Features, mean and covariance of the ground-truth faces (features kept for KID and
        for bootstrap intervals, which resample real and generated frames together)."""
        s = settings(options)
        model = build_inception(s, device)
        chunk = max(s["batch_size"], 1000)
        stream = (test_set.ground_truth(start, stop)
                  for start, stop in batches(test_set.n_samples, chunk))
        rows = image_features(stream, test_set.n_samples, s, device=device, model=model,
                              desc="FID reference features")
        for message in [small_sample_warning(test_set.n_samples, s["dims"]), *labels(s)]:
            if message:
                log.warning("%s: %s", test_set.path, message)
        mu, sigma = statistics(rows)
        return {"features": rows.astype(np.float32), "mu": mu, "sigma": sigma}

    def __init__(self, options: dict, context: Context):
        super().__init__(options, context)
        self.rows: list[np.ndarray] = []
        self.features: np.ndarray | None = None

    def update(self, batch: Batch) -> None:
        self.rows.append(inception_features(batch, self.context, self.options))

    def result(self) -> Result:
        reference = self.context.reference
        self.features = np.concatenate(self.rows)
        mu, sigma = statistics(self.features)
        value = frechet_distance(mu, sigma, reference["mu"], reference["sigma"])
        n = len(self.features)
        warnings_found = [w for w in [small_sample_warning(n, settings(self.options)["dims"])] if w]
        return Result({"fid": value if np.isfinite(value) else None},
                      labels=labels(self.options), warnings=warnings_found,
                      extra={"n_generated": n, "n_reference": int(reference["n"]),
                             "fewer_images_than_dims": bool(warnings_found)})

    def resample(self, samples: np.ndarray) -> dict[str, float]:
        real = self.context.reference["features"][samples]
        mu, sigma = statistics(self.features[samples])
        mu_real, sigma_real = statistics(real)
        return {"fid": frechet_distance(mu, sigma, mu_real, sigma_real, report_warnings=False)}
