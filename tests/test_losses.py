"""Each loss on fixed logits against numbers computed by hand (math module, not torch)."""
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gankit import losses
from gankit.config import LossConfig


def sp(x: float) -> float:
    """softplus by hand: log(1 + e^x)."""
    return math.log1p(math.exp(x))


REAL = torch.tensor([0.0, 2.0])
FAKE = torch.tensor([-1.0, 0.0])


def test_ns_discriminator():
    expected = (sp(-0.0) + sp(-2.0)) / 2 + (sp(-1.0) + sp(0.0)) / 2
    assert losses.ns_d(REAL, FAKE).item() == pytest.approx(expected, rel=1e-6)


def test_ns_and_minimax_generator():
    assert losses.ns_g(FAKE).item() == pytest.approx((sp(1.0) + sp(0.0)) / 2, rel=1e-6)
    assert losses.minimax_g(FAKE).item() == pytest.approx(-(sp(-1.0) + sp(0.0)) / 2, rel=1e-6)


def test_equilibrium_values_at_d_one_half():
    zero = torch.zeros(4)
    assert losses.ns_d(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert losses.ns_g(zero).item() == pytest.approx(math.log(2))


def test_one_sided_label_smoothing():
    # target 0.9 on a real logit of 2: -(0.9 log s(2) + 0.1 log(1 - s(2))) = 0.9 sp(-2) + 0.1 sp(2)
    expected = 0.9 * sp(-2.0) + 0.1 * sp(2.0) + sp(-1.0)
    got = losses.ns_d(torch.tensor([2.0]), torch.tensor([-1.0]), real_target=0.9).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_least_squares():
    assert losses.lsgan_d(REAL, FAKE).item() == pytest.approx(0.5 * (1 + 1) / 2 + 0.5 * (1 + 0) / 2)
    assert losses.lsgan_g(FAKE).item() == pytest.approx(0.5 * (4 + 1) / 2)


def test_wasserstein_and_hinge():
    assert losses.wgan_d(REAL, FAKE).item() == pytest.approx(-0.5 - 1.0)
    assert losses.wgan_g(FAKE).item() == pytest.approx(0.5)
    assert losses.hinge_d(REAL, FAKE).item() == pytest.approx((1 + 0) / 2 + (0 + 1) / 2)


def linear_d(w=(2.0, 0.0)) -> nn.Module:
    d = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        d.weight.copy_(torch.tensor([w]))
    return d


def test_gradient_penalty_and_r1_on_a_linear_critic():
    # D(x) = w.x has gradient w everywhere: |w| = 2 gives GP (2 - 1)^2 = 1 and R1 |w|^2 = 4.
    d, x = linear_d(), torch.randn(8, 2)
    assert losses.gradient_penalty(d, x, torch.randn(8, 2)).item() == pytest.approx(1.0, rel=1e-5)
    assert losses.r1_penalty(d, x).item() == pytest.approx(4.0, rel=1e-5)


class Squeeze(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).squeeze(1)


def test_gan_loss_adds_r1_scaled_by_gamma_over_two():
    d = Squeeze(linear_d())
    real, fake = torch.zeros(4, 2), torch.zeros(4, 2)
    base, _ = losses.GANLoss(LossConfig(name="ns")).d_loss(d, real, fake, 0)
    with_r1, stats = losses.GANLoss(LossConfig(name="ns", r1_gamma=2.0)).d_loss(d, real, fake, 0)
    assert base.item() == pytest.approx(2 * math.log(2), rel=1e-6)
    assert with_r1.item() - base.item() == pytest.approx(0.5 * 2.0 * 4.0, rel=1e-5)
    assert stats["d_real"].item() == pytest.approx(0.5)


def test_lazy_r1_applies_every_kth_step_with_k_times_the_weight():
    d = Squeeze(linear_d())
    real, fake = torch.zeros(4, 2), torch.zeros(4, 2)
    lazy = losses.GANLoss(LossConfig(name="ns", r1_gamma=2.0, r1_every=4))
    added = [lazy.d_loss(d, real, fake, step)[0].item() - 2 * math.log(2) for step in range(8)]
    assert added == pytest.approx([4 * 4.0, 0, 0, 0, 4 * 4.0, 0, 0, 0], abs=1e-5)
    assert sum(added) / 8 == pytest.approx(0.5 * 2.0 * 4.0, rel=1e-5)  # the eager weight on average


def test_wgan_gp_loss_includes_penalty():
    d = Squeeze(linear_d())
    real, fake = torch.ones(4, 2), torch.zeros(4, 2)
    loss, stats = losses.GANLoss(LossConfig(name="wgan-gp", gp_weight=10.0)).d_loss(d, real, fake, 0)
    # E D(fake) - E D(real) = 0 - 2, plus 10 * (|w| - 1)^2 = 10
    assert loss.item() == pytest.approx(-2.0 + 10.0, rel=1e-5)
    assert stats["gp"].item() == pytest.approx(1.0, rel=1e-5)


def test_instance_noise_anneals_linearly_to_zero():
    loss = losses.GANLoss(LossConfig(instance_noise=0.4, instance_noise_anneal=100))
    assert [loss.noise_std(s) for s in (0, 50, 100, 150)] == pytest.approx([0.4, 0.2, 0.0, 0.0])
    constant = losses.GANLoss(LossConfig(instance_noise=0.4))
    assert constant.noise_std(150) == pytest.approx(0.4)


def sp(x: float) -> float:
    return math.log1p(math.exp(x))



def constant_d(logit: float) -> nn.Module:
    """D(x) = logit everywhere (zero weight): its input gradient is 0."""
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.fill_(logit)

    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(x).squeeze(1)

    return Flat()


# (D loss, G loss) when every logit is 1, by hand. wgan-gp: grad D = 0, penalty 10 (0 - 1)^2.
BY_HAND = {
    "ns": (sp(-1) + sp(1), sp(-1)),
    "minimax": (sp(-1) + sp(1), -sp(1)),
    "lsgan": (0.5 * 0 ** 2 + 0.5 * 1 ** 2, 0.5 * 0 ** 2),
    "wgan-gp": (1 - 1 + 10 * 1, -1.0),
    "hinge": (max(0, 1 - 1) + max(0, 1 + 1), -1.0),
}


@pytest.mark.parametrize("name", sorted(BY_HAND))
def test_each_registered_name_gives_its_own_losses(name):
    assert sorted(losses.LOSSES.names()) == sorted(BY_HAND)  # a new loss needs its row here
    loss, d, x = losses.GANLoss(LossConfig(name=name)), constant_d(1.0), torch.randn(6, 2)
    d_want, g_want = BY_HAND[name]
    assert loss.d_loss(d, x, x, 0)[0].item() == pytest.approx(d_want, rel=1e-5)
    assert loss.g_loss(None, d, None, 0, fake=x).item() == pytest.approx(g_want, rel=1e-6)


def test_gradient_penalty_is_taken_between_real_and_generated_points():
    """D(x) = |x|^2 / 2 has grad x. With fake = -real and |real| = 1 the mixed point is (2 eps - 1) real,
    so GP = E(|2 eps - 1| - 1)^2 = 1/3 for eps ~ U(0, 1); at the real or fake points it would be 0,
    at the midpoint 1."""
    class HalfSquare(nn.Module):
        def forward(self, x):
            return 0.5 * x.pow(2).sum(1)

    real = nn.functional.normalize(torch.randn(20000, 2, generator=torch.Generator().manual_seed(0)), dim=1)
    gp = losses.gradient_penalty(HalfSquare(), real, -real, torch.Generator().manual_seed(1))
    assert gp.item() == pytest.approx(1 / 3, abs=0.01)


def test_penalties_of_a_packed_d_use_the_gradient_of_each_group():
    """A PacGAN D judges `pack` samples as one input: R1 and the gradient penalty take the norm of the
    gradient over that whole input. A linear packed D has gradient w for every group: R1 = |w|^2."""
    from gankit.models.mlp import MLPDiscriminator

    d = MLPDiscriminator(2, hidden=(), feature_dim=0, pack=2)
    with torch.no_grad():
        d.logit.weight.copy_(torch.tensor([[0.6, 0.0, 0.0, 0.8]]))  # |w| = 1, each sample's part smaller
    x = torch.randn(8, 2)
    assert losses.r1_penalty(d, x).item() == pytest.approx(1.0, rel=1e-5)
    assert losses.gradient_penalty(d, x, torch.randn(8, 2)).item() == pytest.approx(0.0, abs=1e-8)


def test_info_term_is_the_cross_entropy_of_the_code_head_for_each_packed_sample():
    """InfoGAN's Q reads D's features; with packing, row 2i + j of its output is the code of sample j
    of group i, so the cross-entropy compares each sample's code logits with its own category."""
    from gankit.models.mlp import MLPDiscriminator

    d = MLPDiscriminator(2, hidden=(), feature_dim=0, pack=2)
    d.add_code_head(3)
    with torch.no_grad():  # group (a, b) -> code logits (a0, a1, 0 | b0, b1, 0)
        d.code.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0],
                                          [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]]))
        d.code.bias.zero_()
    x = torch.tensor([[5.0, 0.0], [0.0, 5.0], [0.0, 0.0], [5.0, 0.0]])
    logits, code_logits = d(x, with_code=True)
    assert logits.shape == (2,) and code_logits.shape == (4, 3)
    assert code_logits.argmax(1).tolist() == [0, 1, 0, 0]  # sample 2 ties: the first category
    codes = torch.tensor([0, 1, 2, 0])
    expected = torch.nn.functional.cross_entropy(code_logits, codes)
    assert losses.info_loss(code_logits, codes).item() == pytest.approx(expected.item())
    loss = losses.GANLoss(LossConfig(name="ns", info_weight=0.5), z_dim=2)
    plain = losses.GANLoss(LossConfig(name="ns"), z_dim=2)
    z = torch.cat([torch.randn(4, 2), torch.nn.functional.one_hot(codes, 3).float()], 1)  # the latent G had
    with_info, stats = loss.d_loss(d, x, x, 0, z=z)
    without, _ = plain.d_loss(d, x, x, 0)
    assert with_info.item() - without.item() == pytest.approx(0.5 * expected.item(), rel=1e-5)
    assert stats["info"].item() == pytest.approx(expected.item(), rel=1e-5)
    g_with = loss.g_loss(None, d, z, 0, fake=x)  # G's loss takes the same term on its batch
    g_without = plain.g_loss(None, d, z, 0, fake=x)
    assert g_with.item() - g_without.item() == pytest.approx(0.5 * expected.item(), rel=1e-5)


def test_translation_shifts_each_image_whole_pixels_with_its_edges_repeated():
    x = torch.arange(4 * 8 * 8, dtype=torch.float).reshape(4, 1, 8, 8)
    moved = losses.translate(x, 0.25, torch.Generator().manual_seed(0))
    assert moved.shape == x.shape
    shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]  # 0.25 of 8 pixels: up to 2

    def shifted(image, dy, dx):
        return image[(torch.arange(8) + dy).clamp(0, 7)][:, (torch.arange(8) + dx).clamp(0, 7)]

    for image, original in zip(moved[:, 0], x[:, 0]):
        assert any(torch.equal(image, shifted(original, dy, dx)) for dy, dx in shifts)
    assert not torch.equal(moved, x)  # some image moved
    assert torch.equal(losses.translate(x, 0.0), x)


def test_translation_passes_gradients_to_the_images_and_reaches_both_batches():
    x = torch.randn(6, 1, 8, 8, requires_grad=True)
    losses.translate(x, 0.125, torch.Generator().manual_seed(1)).sum().backward()
    assert x.grad.sum().item() == pytest.approx(6 * 64)  # every output pixel takes one input pixel
    cfg = LossConfig(translate=0.125)
    seen = []
    d = lambda batch: seen.append(batch.detach()) or batch.mean((1, 2, 3))  # noqa: E731
    d.joint_batch = True
    real, fake = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    losses.GANLoss(cfg).d_loss(d, real, fake, 0, torch.Generator().manual_seed(2))
    assert not torch.equal(seen[0][:3], real) and not torch.equal(seen[0][3:], fake)


def test_mode_seeking_is_the_inverse_image_gap_per_latent_gap_within_a_group():
    z = torch.tensor([[0.0], [3.0], [1.0], [0.0]])
    groups = torch.tensor([0, 1, 0, 1])  # interleaved: the pairs are found by sorting on the group
    fake = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [1.0, 1.0]])
    # pairs (0, 2): image gap 2 per latent gap 1; (1, 3): 0 per 3; pairs across groups not counted
    assert losses.mode_seeking(fake, z, groups).item() == pytest.approx(1 / ((2 / 1 + 0 / 3) / 2 + 1e-5))
    # one group: neighbours in batch order (0, 1): 1 per 3; (1, 2): 1 per 2; (2, 3): 1 per 1
    assert losses.mode_seeking(fake, z).item() == pytest.approx(1 / ((1 / 3 + 1 / 2 + 1 / 1) / 3 + 1e-5))


def test_mode_seeking_in_g_loss_pairs_samples_of_one_category_and_pushes_them_apart():
    from gankit.models.noise import sample_noise
    from gankit.config import ModelConfig

    m = ModelConfig(z_dim=3, z_categories=2)
    z = sample_noise(8, m, torch.Generator().manual_seed(0))
    one_per_category = (z[:, 3:] @ torch.tensor([[1.0, -1.0], [-1.0, 1.0]])).requires_grad_()
    d = nn.Linear(2, 1)
    plain = losses.GANLoss(LossConfig(), z_dim=3).g_loss(None, d, z, 0, fake=one_per_category)
    seeking = losses.GANLoss(LossConfig(mode_seeking=0.5), z_dim=3).g_loss(None, d, z, 0, fake=one_per_category)
    assert (seeking - plain).item() == pytest.approx(0.5 / 1e-5, rel=1e-4)  # no gap within either category
    varied = one_per_category + z[:, :1]
    spread = losses.GANLoss(LossConfig(mode_seeking=0.5), z_dim=3).g_loss(None, d, z, 0, fake=varied)
    assert spread.item() < 100


def test_random_affine_warps_each_image_its_own_way_and_keeps_the_background():
    x = torch.full((6, 1, 28, 28), -1.0)
    x[:, :, 8:20, 12:16] = 1.0  # a bar, as a 1 in [-1, 1]
    same = losses.random_affine(x, 0.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)  # strength 0: every map is the identity
    warped = losses.random_affine(x, 1.0, torch.Generator().manual_seed(0))
    assert warped.shape == x.shape and warped.dtype == x.dtype
    assert not torch.allclose(warped, x, atol=1e-3)
    assert len({round(w.sum().item(), 3) for w in warped}) == 6  # six images, six maps
    border = torch.cat([warped[:, :, :3, :], warped[:, :, -3:, :]], dim=2)
    torch.testing.assert_close(border, torch.full_like(border, -1.0), atol=1e-5, rtol=0)  # still background
    again = losses.random_affine(x, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(warped, again)  # drawn from the generator given: a resumed run draws the same
    grad = x.clone().requires_grad_()
    losses.random_affine(grad, 1.0, torch.Generator().manual_seed(0)).sum().backward()
    assert grad.grad is not None and grad.grad.abs().sum() > 0  # G learns through the warp
    bf16 = losses.random_affine(x.bfloat16(), 1.0, torch.Generator().manual_seed(0))
    assert bf16.dtype == torch.bfloat16


def test_affine_grid_samples_where_torchs_affine_grid_does():
    theta = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0))
    for height, width in ((28, 28), (7, 12)):
        expected = F.affine_grid(theta, [5, 1, height, width], align_corners=False)
        torch.testing.assert_close(losses.affine_grid(theta, height, width), expected, atol=2e-6, rtol=0)


def recording_q_setup(calls: list, pack: int = 1):
    """A D with a code head that records each pass it makes (its input, and whether Q read it;
    PacGAN-packed when pack > 1), and a generated and a real batch of six 4x4 images from three categories."""
    from gankit.models.mlp import MLPDiscriminator

    class Recording(MLPDiscriminator):
        def forward(self, x, labels=None, with_code=False):
            calls.append((x.detach().clone(), with_code))
            return super().forward(x.flatten(1), labels, with_code)

    d = Recording(16, hidden=(8,), feature_dim=0, pack=pack)
    d.add_code_head(3)
    codes = torch.tensor([0, 1, 2, 0, 1, 2])
    z = torch.cat([torch.randn(6, 2), torch.nn.functional.one_hot(codes, 3).float()], 1)
    return d, codes, z, torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4)


@pytest.mark.parametrize("schedule_call", ["d_loss", "g_loss", "d_and_g_loss"])
def test_info_warp_gives_q_warped_copies_and_d_its_verdict_on_the_images_as_made(schedule_call):
    """With loss.info_warp, D's verdict comes from a pass over G's images as they are, and Q's code
    logits from a second pass over warped copies of a share of them (loss.info_warp_share)."""
    from gankit.models.mlp import MLPDiscriminator

    calls: list = []
    d, codes, z, fake, real = recording_q_setup(calls)
    loss = losses.GANLoss(LossConfig(info_weight=1.0, info_warp=1.0, info_warp_share=0.5), z_dim=2)
    gen = torch.Generator().manual_seed(0)
    if schedule_call == "d_loss":
        got, stats = loss.d_loss(d, real, fake, 0, gen, z=z)
    elif schedule_call == "g_loss":
        got = loss.g_loss(None, d, z, 0, gen, fake=fake)
    else:
        got, _, stats = loss.d_and_g_loss(d, real, fake, 0, gen, z=z)
    (verdict, verdict_coded), (copies, coded) = calls  # D's pass without Q, then Q's pass over the copies
    assert not verdict_coded and coded and torch.equal(verdict[-6:], fake)  # D judges the images as made
    # the first three rows warped, with the draws of the run's generator
    torch.testing.assert_close(copies, losses.random_affine(fake[:3], 1.0, torch.Generator().manual_seed(0)))
    assert not torch.allclose(copies, fake[:3], atol=1e-3)
    with torch.no_grad():
        logits = MLPDiscriminator.forward(d, verdict.flatten(1))
        _, code_logits = MLPDiscriminator.forward(d, copies.flatten(1), None, True)
    info = torch.nn.functional.cross_entropy(code_logits, codes[:3])
    if schedule_call == "g_loss":
        expected = losses.ns_g(logits) + info
    else:
        expected = losses.ns_d(logits[:6], logits[6:]) + info
        assert stats["info"].item() == pytest.approx(info.item(), rel=1e-5)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_info_every_leaves_the_term_and_q_out_of_the_steps_between():
    calls: list = []
    d, _, z, fake, real = recording_q_setup(calls)
    every_other = losses.GANLoss(LossConfig(info_weight=1.0, info_warp=1.0, info_every=2), z_dim=2)
    plain = losses.GANLoss(LossConfig(), z_dim=2)
    _, stats = every_other.d_loss(d, real, fake, 3, torch.Generator().manual_seed(0), z=z)
    assert "info" not in stats and [q for _, q in calls] == [False]  # step 3: one pass, no Q, no copies
    assert every_other.g_loss(None, d, z, 3, fake=fake).item() == pytest.approx(
        plain.g_loss(None, d, z, 3, fake=fake).item())
    calls.clear()
    _, stats = every_other.d_loss(d, real, fake, 4, torch.Generator().manual_seed(0), z=z)
    assert "info" in stats and [q for _, q in calls] == [False, True]  # step 4: D's pass, then Q's over copies
    computed = stats["info"]
    calls.clear()
    _, stats = every_other.d_loss(d, real, fake, 5, torch.Generator().manual_seed(0), z=z)
    assert [q for _, q in calls] == [False] and torch.equal(stats["info"], computed)  # step 5: the last value, for the log


def test_info_warp_share_keeps_whole_packs():
    """With PacGAN packing, Q's copies are whole packs (at least one), and each keeps its category."""
    from gankit.models.mlp import MLPDiscriminator

    d = MLPDiscriminator(16, hidden=(8,), feature_dim=0, pack=2)
    d.add_code_head(3)
    codes = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    z = torch.cat([torch.randn(8, 2), torch.nn.functional.one_hot(codes, 3).float()], 1)
    fake = torch.randn(8, 1, 4, 4)
    for share, rows in [(0.3, 2), (0.05, 2), (0.5, 4), (1.0, 8)]:
        loss = losses.GANLoss(LossConfig(info_weight=1.0, info_warp=1.0, info_warp_share=share), z_dim=2)
        logits, kept = loss._warped_code_logits(d, fake, None, codes, torch.Generator().manual_seed(0))
        assert logits.shape == (rows, 3) and torch.equal(kept, codes[:rows])


def test_mode_seeking_measures_latent_gaps_in_units_of_the_noise_spread():
    from gankit.models.noise import sample_noise
    from gankit.config import ModelConfig

    z = sample_noise(8, ModelConfig(z_dim=3, z_categories=2), torch.Generator().manual_seed(0))
    narrow = torch.cat([z[:, :3] * 0.1, z[:, 3:]], dim=1)  # what model.z_std = 0.1 draws
    fake = z[:, :2] + z[:, 3:]
    d = nn.Linear(2, 1)
    cfg = LossConfig(mode_seeking=0.5)
    as_drawn = losses.GANLoss(cfg, z_dim=3).g_loss(None, d, z, 0, fake=fake)
    shrunk = losses.GANLoss(cfg, z_dim=3, z_std=0.1).g_loss(None, d, narrow, 0, fake=fake)
    assert shrunk.item() == pytest.approx(as_drawn.item(), rel=1e-5)
    unscaled = losses.GANLoss(cfg, z_dim=3).g_loss(None, d, narrow, 0, fake=fake)
    assert unscaled.item() != pytest.approx(as_drawn.item(), rel=1e-2)  # the gaps would shrink tenfold


def test_mode_seeking_anneals_linearly_to_nothing():
    from gankit.models.noise import sample_noise
    from gankit.config import ModelConfig

    annealed = losses.GANLoss(LossConfig(mode_seeking=0.5, mode_seeking_anneal=100), z_dim=3)
    assert [annealed.mode_seeking_weight(s) for s in (0, 50, 100, 200)] == [0.5, 0.25, 0.0, 0.0]
    assert losses.GANLoss(LossConfig(mode_seeking=0.5), z_dim=3).mode_seeking_weight(10**6) == 0.5
    z = sample_noise(8, ModelConfig(z_dim=3, z_categories=2), torch.Generator().manual_seed(0))
    one_per_category = z[:, 3:] @ torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    d = nn.Linear(2, 1)
    plain = losses.GANLoss(LossConfig(), z_dim=3).g_loss(None, d, z, 0, fake=one_per_category)
    halfway = annealed.g_loss(None, d, z, 50, fake=one_per_category)
    assert (halfway - plain).item() == pytest.approx(0.25 / 1e-5, rel=1e-4)  # the term at half its weight
    assert annealed.g_loss(None, d, z, 100, fake=one_per_category).item() == pytest.approx(plain.item())
    # simultaneous updates: G's loss from D's pass carries the same annealed weight
    _, g_loss, _ = annealed.d_and_g_loss(d, one_per_category, one_per_category, 50, z=z)
    assert (g_loss - plain).item() == pytest.approx(0.25 / 1e-5, rel=1e-4)


def test_top_k_keeps_the_share_of_generated_logits_d_finds_most_real():
    logits = torch.tensor([[0.5], [-2.0], [3.0], [1.0]])
    assert sorted(losses.top_k(logits, 0.5).tolist()) == [1.0, 3.0]
    assert sorted(losses.top_k(logits, 1.0).tolist()) == [-2.0, 0.5, 1.0, 3.0]
    assert losses.top_k(logits, 0.01).tolist() == [3.0]  # at least one


def test_top_k_in_g_loss_counts_only_the_best_samples_and_anneals_from_the_whole_batch():
    d = Squeeze(nn.Linear(1, 1))
    with torch.no_grad():
        d.inner.weight.fill_(1.0)
        d.inner.bias.zero_()
    fake = torch.tensor([[0.5], [-2.0], [3.0], [1.0]], requires_grad=True)  # D's logit: the value itself
    loss = losses.GANLoss(LossConfig(top_k=0.5)).g_loss(None, d, None, 0, fake=fake)
    assert loss.item() == pytest.approx((sp(-3.0) + sp(-1.0)) / 2, rel=1e-6)
    loss.backward()
    assert fake.grad[[0, 1], 0].tolist() == [0.0, 0.0] and (fake.grad[[2, 3], 0] < 0).all()  # left out: no pull
    annealed = losses.GANLoss(LossConfig(top_k=0.5, top_k_anneal=100))
    assert [annealed.top_k_share(s) for s in (0, 50, 100, 200)] == [1.0, 0.75, 0.5, 0.5]
    at_start = annealed.g_loss(None, d, None, 0, fake=fake.detach())
    assert at_start.item() == pytest.approx(sum(sp(-v) for v in (0.5, -2.0, 3.0, 1.0)) / 4, rel=1e-6)
    # simultaneous updates: G's loss from the same pass as D's takes the same share
    _, g_loss, _ = losses.GANLoss(LossConfig(top_k=0.5)).d_and_g_loss(d, torch.zeros(4, 1), fake.detach(), 0)
    assert g_loss.item() == pytest.approx(loss.item(), rel=1e-6)


def test_clustering_loss_is_minus_the_mutual_information_of_the_two_copies_categories():
    k, sure = 4, 50.0
    same = torch.eye(k).repeat(8, 1) * sure  # 32 images, each category sure, used evenly
    assert losses.clustering_loss(same, same).item() == pytest.approx(-math.log(k), rel=1e-4)
    shuffled = same[torch.randperm(32, generator=torch.Generator().manual_seed(0))]
    independent = torch.eye(k).repeat_interleave(8, 0) * sure  # each copy's category says nothing of the other's
    assert losses.clustering_loss(independent, same).item() == pytest.approx(0.0, abs=1e-4)
    assert losses.clustering_loss(shuffled, same).item() > -math.log(k) + 0.1
    one_category = torch.zeros(32, k)
    one_category[:, 0] = sure  # sure and consistent, but everything in one category: no information
    assert losses.clustering_loss(one_category, one_category).item() == pytest.approx(0.0, abs=1e-4)
    unsure = torch.zeros(32, k)  # Q cannot tell: uniform guesses
    assert losses.clustering_loss(unsure, unsure).item() == pytest.approx(0.0, abs=1e-5)
    # the joint is made symmetric: a warped copy always one category on (i -> i + 1) pairs each
    # category with two, which leaves ln 2 of information (ln 4 without the symmetry)
    shifted = torch.eye(k).roll(1, 1).repeat(8, 1) * sure
    assert losses.clustering_loss(same, shifted).item() == pytest.approx(-math.log(2), rel=1e-4)
    far = (torch.eye(k).repeat(8, 1) * 2 - 1).mul(1e4).requires_grad_()  # sure to the last bit: exact zeros
    value = losses.clustering_loss(far, far.roll(1, 0))
    value.backward()
    assert math.isfinite(value.item()) and torch.isfinite(far.grad).all()


def real_sorting_setup(calls: list, pack: int = 1):
    """recording_q_setup's D (packed when pack > 1), and the real batch's expected term, computed
    apart: Q on the batch, and on the warped copy drawn after G's copies (both from seed 0)."""
    d, _, z, fake, real = recording_q_setup(calls, pack)
    gen = torch.Generator().manual_seed(0)
    losses.random_affine(fake, 1.0, gen)  # G's copies come first
    warped = losses.random_affine(real, 1.0, gen)
    with torch.no_grad():
        expected = losses.clustering_loss(d(real, with_code=True)[1], d(warped, with_code=True)[1])
    calls.clear()
    return d, z, fake, real, warped, expected


@pytest.mark.parametrize("joint_batch,pack", [(False, 1), (True, 1), (True, 2)])
def test_info_real_sorts_the_real_batch_and_a_warped_copy_in_d_loss_only(joint_batch, pack):
    """loss.info_real: on a step of the InfoGAN term, Q's code logits on the real batch come from D's
    pass over it, one more pass reads Q on a warped copy of it, and the term is in D's loss alone,
    logged as the mutual information (<= ln K); packed or not."""
    calls: list = []
    d, z, fake, real, warped, expected = real_sorting_setup(calls, pack)
    d.joint_batch = joint_batch
    cfg = LossConfig(info_weight=1.0, info_warp=1.0, info_every=2, info_real=0.5)
    sorting, plain = losses.GANLoss(cfg, z_dim=2), losses.GANLoss(replace(cfg, info_real=0.0), z_dim=2)
    got, stats = sorting.d_loss(d, real, fake, 0, torch.Generator().manual_seed(0), z=z)
    passes = [(x.shape[0], q) for x, q in calls]
    want = [(12, True), (6, True), (6, True)] if joint_batch else [(6, True), (6, False), (6, True), (6, True)]
    assert passes == want  # D's pass(es), Q over G's warped copies, Q over the real batch's warped copy
    assert torch.equal(calls[-1][0], warped)
    assert stats["info_real"].item() == pytest.approx(-expected.item(), rel=1e-5, abs=1e-7)
    without, _ = plain.d_loss(d, real, fake, 0, torch.Generator().manual_seed(0), z=z)
    assert got.item() == pytest.approx(without.item() + 0.5 * expected.item(), rel=1e-5)
    calls.clear()
    sorting.d_loss(d, real, fake, 1, torch.Generator().manual_seed(0), z=z)  # not a step of the term
    assert len(calls) == (1 if joint_batch else 2)
    assert torch.equal(sorting.d_loss(d, real, fake, 1, z=z)[1]["info_real"], stats["info_real"])  # for the log
    sorting.forget_last_stats()  # a rollback or a resume: nothing kept from steps the run no longer has
    assert "info_real" not in sorting.d_loss(d, real, fake, 1, z=z)[1]
    for step in (0, 1):
        gen_a, gen_b = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
        assert sorting.g_loss(None, d, z, step, gen_a, fake=fake).item() == pytest.approx(
            plain.g_loss(None, d, z, step, gen_b, fake=fake).item())
        _, g_sorting, _ = sorting.d_and_g_loss(d, real, fake, step, torch.Generator().manual_seed(0), z=z)
        _, g_plain, _ = plain.d_and_g_loss(d, real, fake, step, torch.Generator().manual_seed(0), z=z)
        assert g_sorting.item() == pytest.approx(g_plain.item())  # G's loss never has the term


def test_info_real_every_sorts_real_images_on_steps_between_the_infogan_terms():
    """loss.info_real_every = 1 beside loss.info_every = 2: on a step without the InfoGAN term, Q
    still sorts the real batch (D's pass with Q, and a pass over the real batch's warped copy, the
    first warps drawn that step), and G's copies get no pass of their own; 0 keeps the term's steps."""
    calls: list = []
    d, z, fake, real, _, _ = real_sorting_setup(calls)
    d.joint_batch = False
    cfg = LossConfig(info_weight=1.0, info_warp=1.0, info_every=2, info_real=0.5, info_real_every=1)
    gen = torch.Generator().manual_seed(0)
    _, stats = losses.GANLoss(cfg, z_dim=2).d_loss(d, real, fake, 1, gen, z=z)
    assert [(x.shape[0], q) for x, q in calls] == [(6, True), (6, False), (6, True)]
    warped = losses.random_affine(real, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(calls[-1][0], warped)
    with torch.no_grad():
        expected = losses.clustering_loss(d(real, with_code=True)[1], d(warped, with_code=True)[1])
    assert stats["info_real"].item() == pytest.approx(-expected.item(), rel=1e-5, abs=1e-7)
    calls.clear()
    on_terms_steps = losses.GANLoss(replace(cfg, info_real_every=0), z_dim=2)
    assert "info_real" not in on_terms_steps.d_loss(d, real, fake, 1, torch.Generator().manual_seed(0), z=z)[1]
    assert len(calls) == 2  # D on the real batch, D on G's: neither with Q
    calls.clear()
    every_other = losses.GANLoss(replace(cfg, info_every=1, info_real_every=2), z_dim=2)  # the term on every step
    assert "info_real" not in every_other.d_loss(d, real, fake, 1, torch.Generator().manual_seed(0), z=z)[1]
    assert [q for _, q in calls] == [False, False, True]  # D on the real batch and on G's, Q on G's warped copies
