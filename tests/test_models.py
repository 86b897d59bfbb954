"""The models: paper's parameter counts, shapes, per-sample normalisation, a few training steps."""

from __future__ import annotations

import pytest
import torch

from lipsync.core.errors import LipsyncError
from lipsync.models import registry
from lipsync.models.blocks import SampleNorm, count_parameters
from lipsync.models.losses import contrastive_loss
from lipsync.training.precision import Precision

TINY = {"width": 0.0625}


def conv(cin, cout, k, norm):
    """Trainable parameters of one layer: kernel + bias, plus the norm's scale and shift."""
    kh, kw = (k, k) if isinstance(k, int) else k
    return kh * kw * cin * cout + cout + {"bn": 2 * cout, "sample": 2, None: 0}[norm]


def residuals(c, n):
    return [(c, c, 3, "bn")] * (2 * n)


# The reference text's generator, layer by layer: (in, out, kernel, norm).
GENERATOR_LAYERS = (
    [(6, 32, 7, "bn"), (32, 64, 5, "bn"), *residuals(64, 2), (64, 128, 3, "bn"),
     *residuals(128, 3), (128, 256, 3, "bn"), *residuals(256, 2), (256, 512, 3, "bn"),
     *residuals(512, 2), (512, 512, 3, "bn"), (512, 512, 3, "bn"), (512, 512, 1, "bn")]
    + [(1, 32, 3, "bn"), *residuals(32, 2), (32, 64, 3, "bn"), *residuals(64, 2),
       (64, 128, 3, "bn"), *residuals(128, 2), (128, 256, 3, "bn"), *residuals(256, 2),
       (256, 512, 3, "bn"), (512, 512, 1, "bn")]
    + [(1024, 512, 3, "bn"), (1024, 512, 3, "bn"), *residuals(512, 2), (1024, 256, 3, "bn"),
       *residuals(256, 2), (512, 128, 3, "bn"), *residuals(128, 2), (256, 64, 3, "bn"),
       *residuals(64, 2), (128, 32, 3, "bn"), (64, 16, 3, "bn"), (16, 16, 3, "bn"),
       (16, 3, 1, None)]
)
DISCRIMINATOR_LAYERS = [
    (3, 64, 7, "sample"), (64, 128, 5, "sample"), (128, 256, 3, "sample"),
    (256, 512, 3, "sample"), (512, 512, 3, "sample"), (512, 512, 3, None),
    (1, 32, 3, "sample"), (32, 64, 3, "sample"), (64, 128, 3, "sample"),
    (128, 256, 3, "sample"), (256, 512, 3, "sample"), (512, 512, 1, None),
]


def test_full_width_models_have_the_parameter_counts_of_the_layer_formulas():
    pair = registry.build("lipgan")
    expected_generator = sum(conv(*layer) for layer in GENERATOR_LAYERS)
    assert count_parameters(pair.generator) == expected_generator
    assert 49.4e6 < expected_generator < 49.6e6  # "about 49.5 M"
    expected_discriminator = sum(conv(*layer) for layer in DISCRIMINATOR_LAYERS)
    assert count_parameters(pair.discriminator) == expected_discriminator
    assert 8.1e6 < expected_discriminator < 8.3e6  # "~8.2 M"
    critic = registry.build("l1wgan_gp").discriminator
    assert count_parameters(critic) == expected_discriminator + 1024 + 1  # linear head


@pytest.mark.parametrize("name", list(registry.MODELS))
def test_tiny_models_map_faces_and_mels_to_faces_and_scores(name):
    torch.manual_seed(0)
    pair = registry.build(name, TINY)
    face_input, mel = torch.rand(3, 6, 96, 96), torch.randn(3, 1, 80, 27)
    fake = pair.generator(face_input, mel)
    assert fake.shape == (3, 3, 96, 96)
    assert 0 <= fake.min() and fake.max() <= 1  # sigmoid
    score = pair.discriminator(fake, mel)
    assert score.shape == (3,)
    if name == "lipgan":
        assert (score >= 0).all() and (score <= 2).all()  # distance of unit vectors


def test_sample_norm_normalises_each_sample_on_its_own():
    norm = SampleNorm()
    x = torch.randn(4, 5, 6, 6) * 3 + 2
    alone = norm(x[:1]).detach()
    together = norm(x).detach()
    torch.testing.assert_close(alone, together[:1])
    assert abs(float(together[2].mean())) < 1e-5
    assert abs(float(together[2].std(unbiased=False)) - 1) < 1e-3


def test_contrastive_loss_pulls_synced_pairs_together_and_pushes_others_past_margin():
    d = torch.tensor([0.0, 0.5, 1.5])
    assert contrastive_loss(d, 0.0).item() == pytest.approx((0 + 0.25 + 2.25) / 3)
    assert contrastive_loss(d, 1.0).item() == pytest.approx((1 + 0.25 + 0) / 3)


def test_unknown_model_or_option_is_an_error_naming_it():
    with pytest.raises(LipsyncError, match="no_such"):
        registry.build("no_such")
    with pytest.raises(LipsyncError, match="learning_rat"):
        registry.build("lipgan", {"learning_rat": 1})


@pytest.mark.parametrize("name", list(registry.MODELS))
def test_each_model_trains_a_few_steps_with_finite_losses_and_moving_weights(name):
    torch.manual_seed(0)
    options = {**TINY, "n_critic": 2} if name != "lipgan" else TINY
    pair = registry.build(name, options)
    networks = {"generator": pair.generator, "discriminator": pair.discriminator}
    optimizers = pair.scheme.optimizers(networks)
    before = [p.detach().clone() for p in pair.generator.parameters()]
    before_d = [p.detach().clone() for p in pair.discriminator.parameters()]
    batch = {"generator_input": torch.rand(4, 6, 96, 96), "mel": torch.randn(4, 1, 80, 27),
             "target": torch.rand(4, 3, 96, 96)}
    seen = set()
    for step in range(2):
        losses = pair.scheme.train_step(batch, step, seed=0, networks=networks,
                                        optimizers=optimizers,
                                        precision=Precision(torch.device("cpu")))
        assert all(torch.isfinite(v) for v in losses.values()), losses
        seen |= set(losses)
    assert "g_loss" in seen
    assert any(not torch.equal(a, b) for a, b in zip(before, pair.generator.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(before_d, pair.discriminator.parameters(), strict=True))


@pytest.mark.parametrize(("name", "options", "key"), [
    ("lipgan", {"width": 0}, "width: 0"),
    ("lipgan", {"unsynced_probability": 1.5}, "unsynced_probability: 1.5"),
    ("l1wgan_gp", {"n_critic": 0}, "n_critic: 0"),
    ("wgan_gp", {"betas": [0.0, 0.9, 0.99]}, "betas"),
    ("wgan_gp", {"learning_rate": "1e-4"}, "learning_rate: '1e-4'"),  # YAML 1.1 reads a str
])
def test_an_out_of_range_model_option_is_refused_naming_it(name, options, key):
    with pytest.raises(LipsyncError, match=key.replace("[", r"\[")):
        registry.build(name, options)


def test_every_model_option_says_why_it_has_its_default():
    for name in registry.MODELS:
        for option, spec in registry.option_table(name).items():
            assert len(spec.doc) > 10, f"{name}.{option}"
            assert spec.problem(spec.default) is None, f"{name}.{option}"
