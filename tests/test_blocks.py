"""minescan.sources.blocks: a tile's blocks decoded by tifffile/imagecodecs equal GDAL's reading."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from minescan.sources import blocks
from minescan.sources.blocks import BlockDecoder
from minescan.sources.local import TileRaster

pytest.importorskip("tifffile")
pytest.importorskip("imagecodecs")

H, W, B = 300, 410, 12  # not multiples of the blocks: the right and bottom blocks are partial


def _write(path, data, **opts):
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype, "crs": "EPSG:32721", "transform": from_origin(500000, 9000000, 10, 10),
               "nodata": 0, **opts}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


def _data(dtype=np.uint16, seed=0):
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(rng.integers(0, 40, (B, H, W)), axis=2) % 9000 + 1  # predictor-friendly, like imagery
    return smooth.astype(dtype)


TILED = {"tiled": True, "blockxsize": 128, "blockysize": 64, "interleave": "pixel"}
FILES = {
    "zstd+pred2 (make-tile)": {**TILED, "compress": "zstd", "predictor": 2, "zstd_level": 1},
    "deflate+pred2": {**TILED, "compress": "deflate", "predictor": 2},
    "lzw": {**TILED, "compress": "lzw"},
    "none": {**TILED, "compress": "none"},
}
WINDOWS = [(0, 0, W, H), (5, 7, 133, 71), (120, 60, 140, 70), (300, 250, W, H), (0, 63, W, 65), (127, 0, 129, H)]


def _gdal(path, c0, r0, c1, r1, bands):
    with TileRaster(path) as r:
        return r.read_px(c0, r0, c1, r1, bands)


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("threads", [1, 2])
def test_windows_equal_gdal(tmp_path, name, threads):
    path = _write(tmp_path / "t.tif", _data(), **FILES[name])
    dec = BlockDecoder(path, threads)
    try:
        for w in WINDOWS:
            for bands in (list(range(B)), [3, 2, 1], [11]):
                got = dec.read(*w, bands)
                ref = _gdal(path, *w, bands)
                assert got.flags.c_contiguous and got.dtype == ref.dtype
                np.testing.assert_array_equal(got, ref)
    finally:
        dec.close()


@pytest.mark.parametrize("iov_max", [3, 1024])
def test_uncompressed_windows_of_all_bands_are_read_straight_into_place(tmp_path, monkeypatch, iov_max):
    """All bands of an uncompressed file: each block's lines go from the file to the window's rows (no block
    cached), in several preadv calls when there are more lines than one call takes; equal to GDAL's."""
    monkeypatch.setattr(blocks, "IOV_MAX", iov_max)
    path = _write(tmp_path / "t.tif", _data(seed=6), **FILES["none"])
    dec = BlockDecoder(path)
    try:
        for w in [*WINDOWS, (128, 64, 256, 128), (1, 1, 2, 2)]:
            np.testing.assert_array_equal(dec.read(*w, list(range(B))), _gdal(path, *w, list(range(B))))
        assert not dec._cache
    finally:
        dec.close()


def test_uncompressed_windows_of_some_bands_are_read_straight_too(tmp_path):
    """Some bands of an uncompressed file: the window's bands taken from its all-band read (no block read
    into a buffer or cached), C-contiguous and equal to GDAL's, in band order asked for."""
    a = _write(tmp_path / "a.tif", np.full((B, H, W), 7, np.uint16), **FILES["none"])
    b = _write(tmp_path / "b.tif", _data(seed=4), **FILES["none"])
    dec = BlockDecoder(a, keep_rows=1)
    for r in range(0, H - 20, 20):
        np.testing.assert_array_equal(dec.read(0, r, W, r + 20, [3, 2, 1]), 7)
    assert not dec._cache
    dec.close()
    dec = BlockDecoder(b, 2)
    try:
        for w in WINDOWS:
            for bands in ([0, 11], [3, 2, 1], [11]):
                got = dec.read(*w, bands)
                assert got.flags.c_contiguous
                np.testing.assert_array_equal(got, _gdal(b, *w, bands))
        assert not dec._cache
    finally:
        dec.close()


def test_float_predictor_3(tmp_path):
    data = (_data(seed=1).astype(np.float32) / 7).astype(np.float32)
    path = _write(tmp_path / "f.tif", data, **{**TILED, "compress": "zstd", "predictor": 3})
    with TileRaster(path) as r:
        assert r.use_block_decoder(2)
        np.testing.assert_array_equal(r.read_px(3, 4, 300, 200, list(range(B))),
                                      _gdal(path, 3, 4, 300, 200, list(range(B))))


def test_tile_raster_uses_it_inside_and_gdal_beyond(tmp_path, monkeypatch):
    path = _write(tmp_path / "t.tif", _data(), **FILES["zstd+pred2 (make-tile)"])
    calls = []
    real = BlockDecoder._block
    monkeypatch.setattr(BlockDecoder, "_block", lambda self, i: calls.append(i) or real(self, i))
    with TileRaster(path) as r:
        assert r.use_block_decoder(2) and r.blocks is not None
        a = r.read_px(0, 0, W, 40, list(range(B)))
        n = len(calls)
        assert n == -(-W // 128)  # one row of blocks
        b = r.read_px(0, 40, W, 64, list(range(B)))  # the same blocks: kept, not decoded again
        assert len(calls) == n
        np.testing.assert_array_equal(np.concatenate([a, b]), _gdal(path, 0, 0, W, 64, list(range(B))))
        edge = r.read_px(-5, -5, 20, 20, list(range(B)))  # beyond the file: GDAL's boundless read, nodata
        assert (edge[:5] == 0).all() and np.array_equal(edge[5:, 5:], _gdal(path, 0, 0, 20, 20, list(range(B))))


@pytest.mark.parametrize("opts, why", [
    ({"tiled": False, "compress": "zstd"}, "not tiled"),
    ({**TILED, "interleave": "band", "compress": "zstd"}, "separately"),
    ({**TILED, "compress": "lerc", "max_z_error": 2}, "compression LERC"),  # lossy: GDAL's pixels only
])
def test_files_it_does_not_read_stay_with_gdal(tmp_path, opts, why):
    path = _write(tmp_path / "t.tif", _data(), **opts)
    with pytest.raises(ValueError, match=why):
        BlockDecoder(path)
    with TileRaster(path) as r:
        assert not r.use_block_decoder(2)
        np.testing.assert_array_equal(r.read_px(5, 7, 133, 71, [0, 5]), _gdal(path, 5, 7, 133, 71, [0, 5]))


def test_a_sparse_files_missing_block_is_left_to_gdal(tmp_path):
    data = _data()
    data[:, :64, :128] = 0  # the first block all nodata: a sparse file leaves it out
    path = _write(tmp_path / "s.tif", data, **FILES["zstd+pred2 (make-tile)"], sparse_ok=True)
    dec = BlockDecoder(path)
    try:
        assert dec.read(0, 0, 200, 100, list(range(B))) is None
        np.testing.assert_array_equal(dec.read(130, 0, 200, 100, list(range(B))), _gdal(path, 130, 0, 200, 100, list(range(B))))
    finally:
        dec.close()
    with TileRaster(path) as r:
        r.use_block_decoder()
        np.testing.assert_array_equal(r.read_px(0, 0, 200, 100, list(range(B))), data[:, :100, :200].transpose(1, 2, 0))


def test_without_the_libraries_it_is_gdal(tmp_path, monkeypatch):
    path = _write(tmp_path / "t.tif", _data(), **FILES["zstd+pred2 (make-tile)"])
    monkeypatch.setattr(blocks, "available", lambda: False)
    with TileRaster(path) as r:
        assert not r.use_block_decoder(2)


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_make_tile_stores_as_asked_and_the_block_decoder_reads_it(tmp_path, compression):
    """source.tile_compression: make-tile writes ZSTD + predictor or uncompressed blocks holding the same
    pixels, both read by the block decoder as by GDAL."""
    from conftest import grid_tile, write_scene

    from minescan import SENTINEL2_BANDS
    from minescan.sources.local import make_tile

    t = grid_tile()
    scene = write_scene(tmp_path / "scene.tif", [t])
    paths = {}
    for c in ("zstd", compression):
        paths[c] = tmp_path / f"tile_{c}.tif"
        make_tile(t, [scene], list(SENTINEL2_BANDS), paths[c], compression=c)
    with rasterio.open(paths[compression]) as ds:
        assert (ds.compression.name if ds.compression else "none") == compression
        assert ds.profile["interleave"] == "pixel" and ds.block_shapes[0] == (512, 512)
        pixels = ds.read()
    with rasterio.open(paths["zstd"]) as ds:
        np.testing.assert_array_equal(ds.read(), pixels)
    dec = BlockDecoder(paths[compression])
    try:
        np.testing.assert_array_equal(dec.read(3, 500, 700, 530, list(range(12))), pixels[:, 500:530, 3:700].transpose(1, 2, 0))
    finally:
        dec.close()


def test_make_tile_refuses_an_unknown_compression(tmp_path):
    from conftest import grid_tile

    from minescan.errors import ConfigError
    from minescan.sources.local import make_tile

    with pytest.raises(ConfigError, match="source.tile_compression"):
        make_tile(grid_tile(), [], ["B4"], tmp_path / "t.tif", compression="lzma")
    assert not (tmp_path / "t.tif").exists()


def test_recompress_tile_keeps_pixels_names_tags_and_georeferencing(tmp_path):
    """Switching an existing tile to another source.tile_compression changes the storage only."""
    from conftest import grid_tile, write_scene

    from minescan import SENTINEL2_BANDS
    from minescan.sources.local import make_tile, recompress_tile

    t = grid_tile()
    zstd = tmp_path / "tile.tif"
    make_tile(t, [write_scene(tmp_path / "scene.tif", [t])], list(SENTINEL2_BANDS), zstd)
    for c in ("none", "zstd"):
        out = tmp_path / f"re_{c}.tif"
        recompress_tile(zstd if c == "none" else tmp_path / "re_none.tif", out, c)
        with rasterio.open(zstd) as a, rasterio.open(out) as b:
            assert (b.compression.name if b.compression else "none") == c
            assert b.descriptions == a.descriptions and b.tags() == a.tags() and b.nodata == a.nodata
            assert b.crs == a.crs and b.transform == a.transform and b.block_shapes == a.block_shapes
            np.testing.assert_array_equal(b.read(), a.read())
    assert sorted(p.name for p in tmp_path.glob("re_*")) == ["re_none.tif", "re_zstd.tif"]  # no temporary left


def test_recompress_tile_refuses_a_file_that_is_no_tile(tmp_path):
    from minescan.errors import InputDataError
    from minescan.sources.local import recompress_tile

    src = _write(tmp_path / "floats.tif", _data(np.float32), **FILES["none"])
    with pytest.raises(InputDataError, match=r"floats.tif: not a tile \(float32 pixels"):
        recompress_tile(src, tmp_path / "out.tif", "none")
    assert not list(tmp_path.glob("out*"))
