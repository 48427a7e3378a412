import numpy as np
import pytest

from stream.raster_scan import RasterScan


def test_raster_and_snake_order():
    raster = RasterScan((2, 3))
    assert [tuple(int(v[0]) for v in raster.points_of([k])) for k in range(6)] == \
        [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    snake = RasterScan((3, 3), snake=True)
    rows, cols = snake.points_of(np.arange(9))
    assert list(zip(rows.tolist(), cols.tolist())) == \
        [(0, 0), (0, 1), (0, 2), (1, 2), (1, 1), (1, 0), (2, 0), (2, 1), (2, 2)]


def test_frames_per_point_and_outside():
    scan = RasterScan((2, 2), frames_per_point=3)
    assert scan.n_frames == 12
    rows, cols = scan.points_of([0, 2, 3, 11, 12, -1])
    assert rows.tolist() == [0, 0, 0, 1, -1, -1] and cols.tolist() == [0, 0, 1, 1, -1, -1]


def test_axis_positions():
    assert RasterScan((2, 2)).axis_positions() is None
    y, x = RasterScan((2, 3), step=(0.5, 0.25), origin=(10.0, -1.0)).axis_positions()
    np.testing.assert_allclose(y, [10.0, 10.5])
    np.testing.assert_allclose(x, [-1.0, -0.75, -0.5])


def test_invalid():
    with pytest.raises(ValueError):
        RasterScan((0, 3))
