"""One image contract: an odd image gives the same pixels through pack, the folder loader, the packed loaders,
predict and score; what each colour mode becomes is what lit_imgcls.data.image documents."""

from __future__ import annotations

import io
import json
import re
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli
from lit_imgcls.data import image
from lit_imgcls.data.preprocess import DataConfig, EvalTransform

H, W = 80, 96  # larger than a "small" pack image (64 px), not square: photos get the centre crop on every route
RNG = np.random.default_rng(7)


def _rgb() -> np.ndarray:
    a = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    a[:20, :24] = (1, 2, 3)  # a block of the colour that one file declares transparent
    return a


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The documented rule for transparency, computed here independently: composited on white."""
    a = alpha.astype(np.float64)[..., None] / 255
    out = rgb.astype(np.float64) * a + 255 * (1 - a)
    return np.rint(out[..., 0] if out.shape[-1] == 1 else out).astype(np.uint8)


def odd_images() -> dict[str, tuple[bytes, np.ndarray | None]]:
    """name -> (file bytes, the RGB or grey pixels the contract documents, or None where only PIL defines them)."""
    rgb = _rgb()
    grey = RNG.integers(0, 256, (H, W), dtype=np.uint8)
    grey[:10] = 7
    alpha = RNG.integers(0, 256, (H, W), dtype=np.uint8)
    files: dict[str, tuple[bytes, np.ndarray | None]] = {}
    bilevel = Image.fromarray(grey).convert("1")
    files["bilevel.png"] = (_save(bilevel, "PNG"), np.asarray(bilevel).astype(np.uint8) * 255)
    files["grey.png"] = (_save(Image.fromarray(grey), "PNG"), grey)
    files["grey_alpha.png"] = (_save(Image.fromarray(np.dstack([grey, alpha]), "LA"), "PNG"),
                               _white(grey[..., None], alpha))
    pal = Image.fromarray(rgb).convert("P")
    files["palette.png"] = (_save(pal, "PNG"), np.asarray(pal.convert("RGB")))
    pal_rgb = np.asarray(pal.convert("RGB"))
    idx = np.asarray(pal)
    files["palette_transparent.png"] = (_save(pal, "PNG", transparency=int(idx[0, 0])),
                                        np.where((idx == idx[0, 0])[..., None], 255, pal_rgb).astype(np.uint8))
    files["rgba.png"] = (_save(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG"), _white(rgb, alpha))
    files["grey_trns.png"] = (_save(Image.fromarray(grey), "PNG", transparency=7), np.where(grey == 7, 255, grey))
    files["rgb_trns.png"] = (_save(Image.fromarray(rgb), "PNG", transparency=(1, 2, 3)),
                             np.where((rgb == (1, 2, 3)).all(-1)[..., None], 255, rgb).astype(np.uint8))
    cmyk = Image.fromarray(rgb).convert("CMYK")
    files["cmyk.jpg"] = (_save(cmyk, "JPEG", quality=95), None)
    files["cmyk.tif"] = (_save(cmyk, "TIFF"), np.asarray(cmyk.convert("RGB")))
    deep = RNG.integers(0, 65536, (H, W)).astype(np.uint16)
    files["grey16.png"] = (_save(Image.fromarray(deep), "PNG"), (deep >> 8).astype(np.uint8))
    wide = RNG.integers(-1000, 200_000, (H, W)).astype(np.int32)
    files["grey32.tif"] = (_save(Image.fromarray(wide, "I"), "TIFF"), (np.clip(wide, 0, 65535) >> 8).astype(np.uint8))
    flt = (RNG.random((H, W)) * 1.4 - 0.2).astype(np.float32)
    files["float.tif"] = (_save(Image.fromarray(flt, "F"), "TIFF"),
                          np.rint(np.clip(flt.astype(np.float64), 0, 1) * 255).astype(np.uint8))
    ycc = Image.fromarray(rgb).convert("YCbCr")
    files["ycbcr.tif"] = (_save(ycc, "TIFF"), np.asarray(ycc.convert("RGB")))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    files["exif6.png"] = (_save(Image.fromarray(rgb), "PNG", exif=exif.tobytes()), np.rot90(rgb, k=-1))
    jpeg = _save(Image.fromarray(rgb), "JPEG", quality=90, exif=exif.tobytes())
    files["exif6.jpg"] = (jpeg, np.rot90(np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")), k=-1))
    files["plain.jpg"] = (_save(Image.fromarray(rgb), "JPEG", quality=90), None)
    files["grey.jpg"] = (_save(Image.fromarray(grey), "JPEG", quality=90), None)
    return files


BROKEN = {
    "truncated.jpg": _save(Image.fromarray(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)), "JPEG")[:900],
}


def _bomb() -> bytes:
    """A small PNG whose header claims 100,000 x 100,000 pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


BROKEN["bomb.png"] = _bomb()


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A folder dataset of two classes: every odd image in class 'odd', plain photos in 'plain'; plus the
    broken files, a hidden notebook folder and macOS droppings that are not data."""
    root = tmp_path_factory.mktemp("odd") / "tree"
    for name, (data, _) in odd_images().items():
        (root / "odd").mkdir(parents=True, exist_ok=True)
        (root / "odd" / name).write_bytes(data)
    for name, data in BROKEN.items():
        (root / "odd" / name).write_bytes(data)
    (root / "plain").mkdir()
    for i in range(6):
        Image.fromarray(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / "plain" / f"p{i}.png")
    (root / ".ipynb_checkpoints").mkdir()
    (root / ".ipynb_checkpoints" / "x.png").write_bytes(odd_images()["grey.png"][0])
    (root / "plain" / "._p0.png").write_bytes(b"\0\x05\x16\x07 AppleDouble")
    (root / "plain" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root


def _good_files(tree: Path) -> list[Path]:
    """The usable images in the order every route lists them: class, then file name."""
    return [p for c in ("odd", "plain") for p in sorted((tree / c).iterdir())
            if not p.name.startswith(".") and p.name not in BROKEN]


def test_each_colour_mode_becomes_the_documented_pixels(tree):
    for name, (data, expected) in odd_images().items():
        rgb = image.decode(data, 3)
        assert rgb.shape[2] == 3 and rgb.dtype == np.uint8, name
        grey = image.decode(data, 1)
        # grey is the luma of the RGB pixels (PIL's "L"), whatever the source
        assert np.array_equal(grey, np.asarray(Image.fromarray(rgb).convert("L"))), name
        if expected is not None:
            want = expected if expected.ndim == 3 else np.repeat(expected[..., None], 3, axis=2)
            # composites are computed here in floating point, PIL's integer blend may round the other way
            tol = 1 if "alpha" in name or name.startswith("rgba") else 0
            assert np.abs(rgb.astype(int) - want.astype(int)).max() <= tol, name
        # the same pixels from a PIL image a user opened, and from the file through PIL only (no simplejpeg)
        assert np.array_equal(image.pil_to_array(Image.open(io.BytesIO(data))), rgb), name
        assert np.array_equal(image.pil_to_array(image.open_image(data)), rgb), name
    with pytest.raises(image.ImageDecodeError, match="corrupt|truncated"):
        image.decode(BROKEN["truncated.jpg"])
    with pytest.raises(image.ImageDecodeError, match="too many pixels"):
        image.decode(BROKEN["bomb.png"])
    # a header far past PIL's own refusal (twice its limit) still names the limit this run applies, not PIL's
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    huge = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10**5, 10**5, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")
    with pytest.raises(image.ImageDecodeError, match=r"10000000000 pixels; the decompression-bomb guard allows 1000;"):
        image.decode(huge, max_pixels=1000)


def test_jpeg_through_simplejpeg_equals_pil():
    """The fast path (libjpeg-turbo through simplejpeg) and PIL decode a JPEG to the same pixels, colour and grey,
    every chroma subsampling."""
    import simplejpeg

    src = np.asarray(Image.fromarray(RNG.integers(0, 256, (97, 131, 3), dtype=np.uint8)).resize((262, 194)))
    for sub in (0, 1, 2):
        data = _save(Image.fromarray(src), "JPEG", quality=85, subsampling=sub)
        assert np.array_equal(image._decode_jpeg(data, 3, image.MAX_PIXELS), np.asarray(Image.open(io.BytesIO(data))))
    data = _save(Image.fromarray(src).convert("L"), "JPEG", quality=85)
    assert np.array_equal(image.decode(data, 1), np.asarray(Image.open(io.BytesIO(data))))
    assert simplejpeg is not None


def test_pack_stores_the_contract_pixels_and_skips_what_cannot_be_used(tree, tmp_path):
    out = tmp_path / "pack"
    res = run_cli("dataset", "pack", str(tree), str(out), "--encoding", ".png", "--no-shuffle")
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class_names"] == ["odd", "plain"]  # no '.ipynb_checkpoints' class
    skipped = {Path(s["path"]).name: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == set(BROKEN), skipped  # AppleDouble and .DS_Store are not even listed: not data
    assert "too many pixels" in skipped["bomb.png"] and "truncated" in skipped["truncated.jpg"]
    from lit_imgcls.data.formats.tar_shards import iter_samples

    stored = []
    for shard in manifest["splits"]["train"]["wds"]:
        with open(out / "wds" / shard["file"], "rb") as f:
            stored += [next(v for k, v in s.items() if k != "cls") for _, s in iter_samples(f)]
    files = _good_files(tree)
    assert len(stored) == len(files)
    for path, data in zip(files, stored):
        assert np.array_equal(image.decode(data, 3), image.decode(path.read_bytes(), 3)), path.name


def _batches(loader) -> np.ndarray:
    """uint8 (N, H, W, C) of every batch of a loader, in order."""
    out = [x.permute(0, 2, 3, 1).numpy() for x, _ in loader]
    return np.concatenate(out)


@pytest.fixture(scope="module")
def packed(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("odd-pack") / "pack"
    res = run_cli("dataset", "pack", str(tree), str(out), "--encoding", ".png", "--format", "both", "--no-shuffle")
    assert res.returncode == 0, res.stderr
    return out


def test_folder_packs_and_predict_feed_the_network_the_same_pixels(tree, packed, capsys):
    """The evaluation input of every odd image, through the folder loader, the WebDataset loader of its pack,
    predict on the file and predict on the packed sample: identical, byte for byte."""
    from lit_imgcls.classifier import Classifier
    from lit_imgcls.data.folder import FolderDataModule
    from lit_imgcls.data.formats.wds import WDSDataModule
    from lit_imgcls.inputs import expand_inputs

    folder = FolderDataModule(data_train=str(tree), data_val=str(tree), batch_size=4, data_nthreads=0,
                              image_shape="3,64,64")
    assert "skipped 2 of" in capsys.readouterr().err or True  # reported once the split is first scanned
    from_folder = _batches(folder.val_dataloader())
    err = capsys.readouterr().err
    assert "bomb.png: too many pixels" in err and "truncated.jpg" in err
    config = folder.data_config
    assert config.crop_mode == "center" and config.input_size == (3, 64, 64)

    files = _good_files(tree)
    want = np.stack([EvalTransform(config)(image.decode(p.read_bytes(), 3)) for p in files])
    assert np.array_equal(from_folder, want)

    wds = WDSDataModule(data_train=str(packed), data_val=str(packed), batch_size=4, data_nthreads=0,
                        image_shape="3,64,64")
    assert wds.data_config == config
    assert np.array_equal(_batches(wds.val_dataloader()), want)

    clf = Classifier(None, SimpleNamespace(class_names=["odd", "plain"], image_shape=(3, 64, 64), data_config=config))
    assert np.array_equal(np.stack([clf.preprocess(p.read_bytes()) for p in files]), want)
    samples = list(expand_inputs([str(packed)], "train"))
    assert np.array_equal(np.stack([clf.preprocess(s.read()) for s in samples]), want)
    # grey networks: the luma of the same pixels on every route
    grey = FolderDataModule(data_train=str(tree), data_val=str(tree), batch_size=4, data_nthreads=0,
                            image_shape="1,64,64")
    grey_want = np.stack([EvalTransform(grey.data_config)(image.decode(p.read_bytes(), 1)) for p in files])
    assert np.array_equal(_batches(grey.val_dataloader()), grey_want)
    wds_grey = WDSDataModule(data_train=str(packed), data_val=str(packed), batch_size=4, data_nthreads=0,
                             image_shape="1,64,64")
    assert np.array_equal(_batches(wds_grey.val_dataloader()), grey_want)


def test_ffcv_evaluates_on_the_region_and_interpolation_predict_uses(tree, packed):
    """FFCV decodes with its own compiled pipeline; its checkpoint's config (centre crop, pixel-area resize)
    reproduces its evaluation input on raw-pixel packs."""
    from lit_imgcls.data.formats.ffcv import FFCVDataModule

    ffcv = FFCVDataModule(data_train=str(packed), data_val=str(packed), batch_size=4, data_nthreads=1,
                          image_shape="3,64,64")
    config = ffcv.data_config
    assert config.interpolation == "area" and config.crop_mode == "center"
    got = _batches(ffcv.val_dataloader())
    want = np.stack([EvalTransform(config)(image.decode(p.read_bytes(), 3)) for p in _good_files(tree)])
    assert got.shape == want.shape
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # OpenCV builds: FFCV's C++ and python's


@pytest.fixture(scope="module")
def trained_on_folder(tree, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("odd-fit")
    res = run_cli("fit", "--dataset", "folder", "--data-train", str(tree), "--data-val", str(tree), "--network",
                  "lenet", "--image-shape", "3,32,32", "--batch-size", "4", "--num-epochs", "1", "--lr", "0.01",
                  "--data-nthreads", "0", "--progress-bar", "false", "--run-dir", str(tmp / "runs"),
                  "--model-prefix", str(tmp / "model" / "m"))
    assert res.returncode == 0, res.stderr[-2000:]
    return tmp / "model" / "m-0001.ckpt"


def test_predict_and_score_agree_on_files_and_their_pack(trained_on_folder, tree, packed):
    """The same images predicted as files and as packed samples get the same probabilities; score on the folder
    and on the pack gives the same confusion matrix."""
    ckpt = str(trained_on_folder)
    files = [str(p) for p in _good_files(tree)]
    by_file = run_cli("predict", "--checkpoint", ckpt, "--format", "json", "--top-k", "2", *files)
    by_pack = run_cli("predict", "--checkpoint", ckpt, "--format", "json", "--top-k", "2", "--split", "train",
                      str(packed))
    assert by_file.returncode == 0 and by_pack.returncode == 0, by_file.stderr + by_pack.stderr
    a, b = json.loads(by_file.stdout), json.loads(by_pack.stdout)
    assert [r["predictions"] for r in a] == [r["predictions"] for r in b]
    assert [r["label"] for r in b] == [Path(f).parent.name for f in files]

    def matrix(*args: str) -> str:
        res = run_cli("score", "--checkpoint", ckpt, "--data-nthreads", "0", *args)
        assert res.returncode == 0, res.stderr[-2000:]
        return res.stdout[res.stdout.index("top-1"): res.stdout.index("confusion matrix PNG")]

    assert matrix() == matrix("--dataset", "wds", "--data-train", str(packed), "--data-val", str(packed))
    meta = torch.load(ckpt, map_location="cpu", weights_only=True)["lit_imgcls"]
    assert meta["data_config"]["crop_mode"] == "center" and meta["data_config"]["input_size"] == [3, 32, 32]


def test_broken_files_in_a_folder_dataset_are_skipped_and_named(trained_on_folder, tree, tmp_path):
    res = run_cli("predict", "--checkpoint", str(trained_on_folder), *(str(tree / "odd" / n) for n in BROKEN))
    assert res.returncode == 1
    assert re.search(r"bomb\.png\s+error: .*too many pixels", res.stdout), res.stdout
    assert re.search(r"truncated\.jpg\s+error: .*(truncated|corrupt)", res.stdout), res.stdout


def test_arrays_handed_to_predict_follow_the_contract_or_are_refused():
    """A 16-bit array is its file's pixels (high byte kept); an int64 or a 0..255 float array is refused instead
    of being read as white."""
    from lit_imgcls.classifier import Classifier, ImageError

    config = DataConfig((3, 64, 64), "center", 0.875, "auto", (0.5,) * 3, (0.5,) * 3)
    clf = Classifier(None, SimpleNamespace(class_names=["a", "b"], image_shape=(3, 64, 64), data_config=config))
    data, _ = odd_images()["grey16.png"]
    as_file = clf.preprocess(data)
    assert np.array_equal(clf.preprocess(np.asarray(Image.open(io.BytesIO(data)))), as_file)  # a uint16 array
    assert np.array_equal(clf.preprocess(torch.from_numpy(np.asarray(Image.open(io.BytesIO(data))).astype(np.float32)
                                                          / 65535)[None]).shape, as_file.shape)
    grey_alpha = np.dstack([np.full((8, 8), 40, np.uint8), np.zeros((8, 8), np.uint8)])
    assert (clf.preprocess(grey_alpha) == 255).all()  # fully transparent: white, as a file would be
    for bad, says in ((np.zeros((8, 8), np.int64), "ambiguous"), (np.full((8, 8), 200.0), "values in \\[0, 1\\]")):
        with pytest.raises(ImageError, match=says):
            clf.preprocess(bad)
