"""Tile resampling shared by the rasterio and QGIS sources."""

import numpy as np
import pytest

from rs_text_search.core.resample import resample_band, resample_nearest


def test_resampling_averages_valid_pixels_and_interpolates_when_enlarging():
    values = np.arange(16, dtype=float).reshape(4, 4)
    valid = np.ones((4, 4), dtype=bool)
    out, out_valid = resample_band(values, valid, 2, 2)
    np.testing.assert_allclose(out, values.reshape(2, 2, 2, 2).mean(axis=(1, 3)))
    assert out_valid.all()
    valid[0, 0] = False  # nodata is left out of the average, not counted as zero
    out, _ = resample_band(values, valid, 2, 2)
    assert out[0, 0] == pytest.approx((1 + 4 + 5) / 3)
    flat, _ = resample_band(np.full((3, 3), 7.0), np.ones((3, 3), bool), 8, 8)
    np.testing.assert_allclose(flat, 7.0)
    assert resample_nearest(np.arange(4)[None, :].repeat(4, 0), 2, 2).tolist() == [[1, 3], [1, 3]]


@pytest.mark.parametrize("shape, out", [((78, 78), 128), ((200, 256), 128), ((30, 50), 64)])
def test_all_valid_shortcut_equals_the_masked_formula(shape, out):
    from rs_text_search.core.resample import _weights, resample_full

    bands = np.random.default_rng(3).integers(0, 256, (3, *shape), dtype=np.uint8)
    rows, cols = _weights(shape[0], out), _weights(shape[1], out)
    ones = np.ones(shape)
    expected = np.stack([(rows @ b.astype(float) @ cols.T) / (rows @ ones @ cols.T) for b in bands])
    np.testing.assert_allclose(resample_full(bands, out, out), expected, rtol=1e-12, atol=1e-9)
    values, valid = resample_band(bands[0], np.ones(shape, bool), out, out)
    np.testing.assert_array_equal(values, resample_full(bands[:1], out, out)[0])
    assert valid.all() and valid.shape == (out, out)
