import numpy as np
import pytest

from rs_text_search.core.preprocess import ImageSpec, preprocess, resize_uint8


def test_identity_size_is_exact_normalisation():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    spec = ImageSpec(size_px=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    out = preprocess(image, spec)
    assert out.shape == (1, 3, 32, 32) and out.dtype == np.float32
    expected = (image.astype(np.float32) / 255.0 - 0.5) / 0.25
    np.testing.assert_allclose(out[0], expected.transpose(2, 0, 1), atol=1e-5)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_resize_keeps_flat_images_flat_and_means(interpolation):
    flat = np.full((57, 91, 3), 77, np.uint8)
    np.testing.assert_allclose(resize_uint8(flat, 20, 30, interpolation), 77.0, atol=1e-3)
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    small = resize_uint8(noise, 64, 64, interpolation)
    assert abs(small.mean() - noise.mean()) < 1.0
    assert small.std() < noise.std() / 2  # antialiasing averages, it does not sample


def test_downscale_by_two_bilinear_matches_hand_computed_weights():
    image = (np.arange(16, dtype=np.uint8).reshape(4, 4) * 10)[:, :, None].repeat(3, axis=2)
    out = resize_uint8(image, 2, 2, "bilinear")
    # Triangle filter widened x2: output centre 1.0 sees input centres 0.5, 1.5, 2.5 at distances
    # 0.25, 0.25, 0.75 (in widened units) -> weights 3/7, 3/7, 1/7 (0 for 3.5).
    weights = np.array([[3, 3, 1, 0], [0, 1, 3, 3]]) / 7.0
    expected = weights @ image[:, :, 0].astype(float) @ weights.T
    np.testing.assert_allclose(out[:, :, 0], expected, atol=1e-3)


def test_shortest_side_then_centre_crop():
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 50:150] = 255
    out = preprocess(image, ImageSpec(size_px=50, mean=(0, 0, 0), std=(1, 1, 1), resize_mode="shortest"))
    assert out.shape == (1, 3, 50, 50)
    assert out[..., 2:-2].min() > 0.999  # the centre crop keeps only the white middle
    assert out.min() > 0.9  # edge pixels blend with the black border through the filter support


def test_rejects_non_uint8():
    with pytest.raises(ValueError):
        preprocess(np.zeros((1, 8, 8, 3), np.float32), ImageSpec(size_px=8))
