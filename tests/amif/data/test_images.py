"""Image loading: raster formats, DICOM (real files shipped with pydicom / pydicom-data), errors."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from amif.data.images import is_dicom, load_image
from amif.errors import DataError


def _testfile(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} not available")
    return str(path)


def _grey(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img)
    assert arr.ndim == 3 and arr.shape[2] == 3
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
    return arr[..., 0].astype(np.int32)


# ----------------------------------------------------------------------------------------------- DICOM


def test_ct_small_is_rgb_with_the_right_size_and_default_soft_tissue_window():
    path = _testfile("CT_small.dcm")
    ds = pydicom.dcmread(path)
    assert "WindowCenter" not in ds  # so the CT default window applies
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (ds.Columns, ds.Rows) == (128, 128)
    grey = _grey(img)
    # recompute by hand: HU = raw * slope + intercept, window 40 / 400 -> [-160, 240] HU
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = np.clip(np.round((hu + 160.0) * 255.0 / 400.0), 0, 255)
    assert np.abs(grey - expected).max() <= 1
    assert grey.min() == 0 and grey.max() == 255  # air and bone are both in this slice


def test_explicit_window_changes_the_output():
    path = _testfile("CT_small.dcm")
    default = _grey(load_image(path))
    bone = _grey(load_image(path, window=(400, 1800)))
    assert not np.array_equal(default, bone)
    # a wider window compresses contrast: fewer saturated pixels
    assert (bone == 255).sum() < (default == 255).sum()
    with pytest.raises(ValueError):
        load_image(path, window=(40, 0))


def test_mr_small_uses_header_window():
    path = _testfile("MR_small.dcm")
    ds = pydicom.dcmread(path)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (64, 64)
    grey = _grey(img)
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    expected = np.clip(np.round((ds.pixel_array.astype(np.float64) - (c - w / 2)) * 255.0 / w), 0, 255)
    assert np.abs(grey - expected).max() <= 1
    assert not np.array_equal(grey, _grey(load_image(path, window=(c, w / 4))))


def test_multi_valued_window_uses_first_value():
    path = _testfile("MR-SIEMENS-DICOM-WithOverlays.dcm")
    ds = pydicom.dcmread(path)
    assert len(ds.WindowCenter) > 1
    c, w = float(ds.WindowCenter[0]), float(ds.WindowWidth[0])
    assert np.array_equal(_grey(load_image(path)), _grey(load_image(path, window=(c, w))))


@pytest.mark.parametrize("name", ["US1_UNCI.dcm", "SC_rgb.dcm"])
def test_colour_dicom(name):
    path = _testfile(name)
    ds = pydicom.dcmread(path)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (ds.Columns, ds.Rows)
    assert np.array_equal(np.asarray(img), ds.pixel_array)


def test_ybr_dicom_converted_to_rgb():
    rgb = np.asarray(load_image(_testfile("SC_rgb.dcm"))).astype(int)
    ybr = np.asarray(load_image(_testfile("SC_ybr_full_uncompressed.dcm"))).astype(int)
    assert np.abs(rgb - ybr).max() <= 8  # same picture, small rounding from the colour conversion


def test_multiframe_gives_middle_frame():
    path = _testfile("emri_small.dcm")
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array
    assert frames.ndim == 3 and frames.shape[0] == 10
    img = load_image(path, window=(200, 400))
    mid = frames[5].astype(np.float64)
    expected = np.clip(np.round(mid * 255.0 / 400.0), 0, 255)
    assert np.abs(_grey(img) - expected).max() <= 1


def test_monochrome1_is_inverted(tmp_path):
    src = _testfile("MR_small.dcm")
    ds = pydicom.dcmread(src)
    ds.PhotometricInterpretation = "MONOCHROME1"
    out = tmp_path / "mono1.dcm"
    ds.save_as(out)
    assert np.array_equal(_grey(load_image(out)), 255 - _grey(load_image(src)))


def test_min_max_fallback_without_window(tmp_path):
    src = _testfile("MR_small.dcm")
    ds = pydicom.dcmread(src)
    del ds.WindowCenter
    del ds.WindowWidth
    out = tmp_path / "nowin.dcm"
    ds.save_as(out)
    grey = _grey(load_image(out))
    assert grey.min() == 0 and grey.max() == 255
    lo, hi = np.percentile(ds.pixel_array, (0.5, 99.5))
    expected = np.clip(np.round((ds.pixel_array - lo) * 255.0 / (hi - lo)), 0, 255)
    assert np.abs(grey - expected).max() <= 1


def test_dicom_detected_by_magic_or_missing_suffix(tmp_path):
    src = _testfile("CT_small.dcm")
    no_suffix = tmp_path / "IM0001"
    odd_suffix = tmp_path / "slice.bin"
    shutil.copy(src, no_suffix)
    shutil.copy(src, odd_suffix)
    assert is_dicom(src) and is_dicom(no_suffix) and is_dicom(odd_suffix)
    ref = np.asarray(load_image(src))
    assert np.array_equal(np.asarray(load_image(no_suffix)), ref)
    assert np.array_equal(np.asarray(load_image(odd_suffix)), ref)
    png = tmp_path / "x.png"
    Image.new("RGB", (4, 4)).save(png)
    assert not is_dicom(png)


def test_unsupported_compressed_dicom_raises_dataerror():
    # JPEG Lossless needs a decoder (GDCM / pylibjpeg) that is not installed here
    path = _testfile("SC_rgb_jpeg_gdcm.dcm")
    try:
        _ = pydicom.dcmread(path).pixel_array
    except Exception:
        pass
    else:
        pytest.skip("a JPEG Lossless decoder is installed")
    with pytest.raises(DataError) as e:
        load_image(path)
    assert path in str(e.value)


@pytest.mark.parametrize("name", ["rtplan.dcm", "MR_truncated.dcm"])
def test_dicom_without_or_with_truncated_pixel_data(name):
    path = _testfile(name)
    with pytest.raises(DataError) as e:
        load_image(path)
    assert path in str(e.value) and e.value.path == path


# ----------------------------------------------------------------------------------------------- raster


def test_png_jpeg_and_modes(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.mode == "RGB" and img.size == (30, 20) and np.array_equal(np.asarray(img), arr)
    Image.fromarray(arr[..., 0]).save(tmp_path / "g.jpg")
    g = load_image(tmp_path / "g.jpg")
    assert g.mode == "RGB" and g.size == (30, 20)
    Image.new("RGBA", (5, 5), (255, 0, 0, 0)).save(tmp_path / "t.png")
    assert np.asarray(load_image(tmp_path / "t.png")).max() == 0  # transparent -> black background


def test_16bit_png_min_max(tmp_path):
    arr = np.linspace(1000, 5000, 64 * 32).reshape(32, 64).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode.startswith("I")
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (64, 32)
    grey = _grey(img)
    assert grey.min() == 0 and grey.max() == 255
    assert (np.diff(grey.ravel()) >= 0).all()  # monotone ramp stays monotone
    windowed = _grey(load_image(path, window=(3000, 1000)))
    assert windowed[0, 0] == 0 and windowed[-1, -1] == 255 and not np.array_equal(windowed, grey)


def test_missing_file_raises_dataerror_naming_it(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(DataError) as e:
        load_image(path)
    assert str(path) in str(e.value)
    with pytest.raises(DataError):
        load_image(tmp_path / "nope.dcm")


def test_random_bytes_raise_dataerror(tmp_path):
    junk = os.urandom(4096)
    for name in ("x.png", "x.dcm", "x"):
        path = tmp_path / name
        path.write_bytes(junk)
        with pytest.raises(DataError) as e:
            load_image(path)
        assert str(path) in str(e.value)


def test_truncated_png_raises_dataerror(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    good = tmp_path / "good.png"
    Image.fromarray(arr).save(good)
    data = good.read_bytes()
    bad = tmp_path / "bad.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as e:
        load_image(bad)
    assert str(bad) in str(e.value)


def test_directory_raises_dataerror(tmp_path):
    with pytest.raises(DataError):
        load_image(tmp_path)


def test_dicom_without_preamble(tmp_path):
    src = _testfile("CT_small.dcm")
    data = open(src, "rb").read()
    assert data[128:132] == b"DICM"
    bare = tmp_path / "bare.dcm"
    bare.write_bytes(data[132:])  # no preamble, no DICM magic: still read by suffix
    assert np.array_equal(np.asarray(load_image(bare)), np.asarray(load_image(src)))


def test_dicom_data_set_without_file_meta(tmp_path):
    src = _testfile("CT_small.dcm")
    data = open(src, "rb").read()
    meta_len = int.from_bytes(data[140:144], "little")  # (0002,0000) group length value
    body = tmp_path / "IMG0001"  # no suffix, no preamble, no file meta: only the data set
    body.write_bytes(data[144 + meta_len :])
    assert np.array_equal(np.asarray(load_image(body)), np.asarray(load_image(src)))
