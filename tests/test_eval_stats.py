"""The statistics equal their references on the same arrays: torchmetrics (FID, KID), the CMMD paper's
MMD (transcribed), scikit-image (SSIM, PSNR), to float64 precision."""

import numpy as np
import pytest
import torch

from clipaway_jax.eval import stats


def _features(n=300, d=64, shift=0.0, seed=0):
    rng = np.random.RandomState(seed)
    mixing = rng.randn(d, d) / np.sqrt(d)
    return (rng.randn(n, d) @ mixing + shift).astype(np.float32)


def test_fid_equals_torchmetrics():
    from torchmetrics.image.fid import _compute_fid

    a, b = _features(seed=0), _features(shift=0.3, seed=1)  # 300 samples of 64-d: full-rank covariances
    (mu1, s1), (mu2, s2) = stats.gaussian_stats(a), stats.gaussian_stats(b)
    t = lambda x: torch.from_numpy(np.asarray(x, np.float64))
    expected = float(_compute_fid(t(mu1), t(s1), t(mu2), t(s2)))
    ours = stats.fid(a, b)
    assert abs(ours - expected) <= 1e-6 * abs(expected), (ours, expected)
    assert stats.fid(a, a) == pytest.approx(0.0, abs=1e-6)


def test_fid_equals_pytorch_fids_sqrtm_form():
    """pytorch-fid's calculate_frechet_distance (scipy.linalg.sqrtm), transcribed."""
    from scipy import linalg

    (mu1, s1), (mu2, s2) = stats.gaussian_stats(_features(seed=2)), stats.gaussian_stats(_features(shift=0.2, seed=3))
    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    expected = (mu1 - mu2).dot(mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real)
    assert stats.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fid_of_few_images_is_finite_and_symmetric():
    a, b = _features(n=12, d=256, seed=4), _features(n=12, d=256, shift=0.5, seed=5)
    assert np.isfinite(stats.fid(a, b)) and stats.fid(a, b) == pytest.approx(stats.fid(b, a), rel=1e-9)


def test_fid_covariance_is_unbiased_as_torchmetrics():
    a = _features(n=50, d=8)
    mu, sigma = stats.gaussian_stats(a)
    centred = a.astype(np.float64) - a.mean(0)
    np.testing.assert_allclose(sigma, centred.T @ centred / (len(a) - 1), rtol=1e-12)


def test_kid_subset_mmd_equals_torchmetrics_poly_mmd():
    from torchmetrics.image.kid import poly_mmd

    a, b = _features(n=120, d=32, seed=2), _features(n=120, d=32, shift=0.2, seed=3)
    t = lambda x: torch.from_numpy(np.asarray(x, np.float64))
    expected = float(poly_mmd(t(a), t(b), degree=3, gamma=None, coef=1.0))
    ours = stats.polynomial_mmd2(a, b)
    assert abs(ours - expected) <= 1e-9 * abs(expected), (ours, expected)


def test_kid_draws_subsets_as_torch_fidelity():
    from torchmetrics.image.kid import poly_mmd

    a, b = _features(n=80, d=16, seed=4), _features(n=90, d=16, shift=0.1, seed=5)
    rng, expected = np.random.RandomState(7), []
    for _ in range(5):  # torch-fidelity's loop: one choice from each set per subset, in this order
        x, y = a[rng.choice(80, 40, replace=False)], b[rng.choice(90, 40, replace=False)]
        expected.append(float(poly_mmd(torch.from_numpy(x.astype(np.float64)), torch.from_numpy(y.astype(np.float64)))))
    mean, std = stats.kid(a, b, subsets=5, subset_size=40, seed=7)
    assert mean == pytest.approx(np.mean(expected), rel=1e-9) and std == pytest.approx(np.std(expected), rel=1e-9)


def test_kid_says_when_there_are_too_few_images():
    with pytest.raises(stats.TooFewSamples, match="at least --kid-subset-size=1000 images per set, found 300"):
        stats.kid(_features(), _features(seed=1))


def _cmmd_reference(x, y, sigma=10, scale=1000):
    """google-research/cmmd distance.mmd, line for line (numpy for jnp)."""
    x_sqnorms, y_sqnorms = np.diag(x @ x.T), np.diag(y @ y.T)
    gamma = 1 / (2 * sigma**2)
    k_xx = np.mean(np.exp(-gamma * (-2 * x @ x.T + x_sqnorms[:, None] + x_sqnorms[None, :])))
    k_xy = np.mean(np.exp(-gamma * (-2 * x @ y.T + x_sqnorms[:, None] + y_sqnorms[None, :])))
    k_yy = np.mean(np.exp(-gamma * (-2 * y @ y.T + y_sqnorms[:, None] + y_sqnorms[None, :])))
    return scale * (k_xx + k_yy - 2 * k_xy)


def test_cmmd_equals_the_papers_mmd():
    unit = lambda f: f / np.linalg.norm(f, axis=1, keepdims=True)
    a, b = unit(_features(d=768).astype(np.float64)), unit(_features(d=768, shift=0.05, seed=1).astype(np.float64))
    expected = _cmmd_reference(a, b)
    assert stats.cmmd(a, b) == pytest.approx(expected, rel=1e-9)
    assert expected > 0


@pytest.mark.parametrize("shape", [(64, 64, 3), (37, 50, 3)])
def test_ssim_and_psnr_equal_scikit_image(shape):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = np.random.RandomState(0)
    a = rng.rand(*shape)
    b = np.clip(a + 0.1 * rng.randn(*shape), 0, 1)
    expected = structural_similarity(a, b, channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)  # fmt: skip
    assert stats.ssim(a, b) == pytest.approx(expected, rel=1e-9)
    assert stats.psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), rel=1e-12)


def test_masked_metrics_only_see_the_mask():
    a = np.zeros((8, 8, 3))
    b = a.copy()
    b[:4] = 0.5
    mask = np.zeros((8, 8))
    mask[4:] = 1
    assert stats.mae(a, b, mask) == 0 and stats.psnr(a, b, mask) == float("inf")
    assert stats.mae(a, b, 1 - mask) == pytest.approx(0.5) and stats.mae(a, b) == pytest.approx(0.25)
