import numpy as np

from firmware.masks import blank_rgb, blank_yuv420, rasterize


def test_rectangle_and_triangle():
    m = rasterize([[(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)]], 8, 4)
    assert m[:, :4].all() and not m[:, 4:].any()
    tri = rasterize([[(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]], 100, 100)
    assert tri[0, 0] and not tri[99, 99]
    assert abs(tri.mean() - 0.5) < 0.02


def test_no_masks_is_all_false():
    assert not rasterize([], 10, 10).any()


def test_blank_rgb():
    img = np.full((4, 8, 3), 200, np.uint8)
    blank_rgb(img, rasterize([[(0, 0), (0.5, 0), (0.5, 1), (0, 1)]], 8, 4))
    assert (img[:, :4] == 0).all() and (img[:, 4:] == 200).all()


def test_blank_yuv420_with_stride():
    w, h, stride = 8, 4, 16
    buf = np.full(stride * h * 3 // 2, 200, np.uint8)
    blank_yuv420(buf, rasterize([[(0, 0), (0.5, 0), (0.5, 1), (0, 1)]], w, h), w, h, stride)
    y = buf[: stride * h].reshape(h, stride)
    assert (y[:, :4] == 16).all() and (y[:, 4:] == 200).all()
    u = buf[stride * h : stride * h + (stride // 2) * (h // 2)].reshape(h // 2, stride // 2)
    assert (u[:, :2] == 128).all() and (u[:, 2:] == 200).all()
