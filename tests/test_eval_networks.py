"""The evaluation networks equal their PyTorch originals on the same random weights (fp32, 1e-4 of
scale): the FID Inception (both input pipelines) and LPIPS-AlexNet; and their converters are strict."""

import jax
import numpy as np
import pytest
import torch
from eval_references import fid_inception, lpips_alex
from fixtures import assert_close, nchw, numpy_state

from clipaway_jax import xla
from clipaway_jax.convert.engine import ConversionError
from clipaway_jax.convert.networks import convert_inception, convert_lpips
from clipaway_jax.models.inception import FIDInceptionV3
from clipaway_jax.models.lpips import LPIPS


@pytest.fixture(scope="module")
def inception():
    reference = fid_inception()
    return reference, {"params": convert_inception(numpy_state(reference))}


def _images(shape, seed=0):
    return np.random.RandomState(seed).randint(0, 256, shape, np.uint8)


@pytest.mark.parametrize("size", [(64, 80), (512, 512)])
def test_fid_inception_equals_torch_fidelity(inception, size):
    reference, params = inception
    images = _images((2, *size, 3))
    with torch.no_grad():
        expected = reference(torch.from_numpy(nchw(images).copy())).numpy()
    out = xla.jit(FIDInceptionV3().apply)(params, images / 255.0)
    err = assert_close(out, expected, f"FID inception at {size}")
    print(f"FID inception (torch-fidelity input), {size}: max abs error {err:.2e}, scale {np.abs(expected).max():.1f}")


def test_fid_inception_equals_pytorch_fid_input_pipeline(inception):
    reference, params = inception
    images = _images((2, 100, 90, 3), seed=1) / 255.0
    with torch.no_grad():
        expected = reference.pytorch_fid(torch.from_numpy(nchw(images).astype(np.float32).copy())).numpy()
    out = xla.jit(FIDInceptionV3(resize="pytorch-fid").apply)(params, images)
    assert_close(out, expected, "FID inception, pytorch-fid resize")


def test_inception_converter_is_strict(inception):
    state = numpy_state(inception[0])
    state.pop("Mixed_6b.branch7x7_2.bn.running_var")
    state["AuxLogits.fc.weight"] = np.zeros((1000, 768), np.float32)
    with pytest.raises(ConversionError) as err:
        convert_inception(state, name="pt_inception.pth")
    assert "pt_inception.pth" in str(err.value) and "AuxLogits.fc.weight" in str(err.value)
    assert "Mixed_6b/branch7x7_2/bn/var" in str(err.value)


@pytest.mark.parametrize("size", [(64, 64), (96, 120)])
def test_lpips_equals_the_lpips_package(size):
    reference = lpips_alex()
    params = {"params": convert_lpips(reference.torchvision_state(), reference.lin_state())}
    rng = np.random.RandomState(0)
    x = rng.rand(3, *size, 3).astype(np.float32)
    y = np.clip(x + 0.2 * rng.randn(*x.shape), 0, 1).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(nchw(x).copy()), torch.from_numpy(nchw(y).copy())).numpy().ravel()
    out = jax.jit(LPIPS().apply)(params, x, y)
    err = assert_close(out, expected, f"LPIPS at {size}")
    print(f"LPIPS at {size}: max abs error {err:.2e} (values {expected.round(4)})")
    assert np.asarray(jax.jit(LPIPS().apply)(params, x, x)).max() < 1e-9  # d(x, x) = 0
