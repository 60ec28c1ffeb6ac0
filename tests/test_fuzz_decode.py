"""Fuzzing every decoder that turns untrusted bytes into pixels: random bytes, real images with flipped,
inserted or cut bytes, and headers claiming absurd sizes (decompression bombs).

Property, for each entry point: it returns a sane uint8 array of the expected shape (or, for pack's encoder, a
reason to skip the file), or raises the one error type it documents with a one-line message. Never another
exception type, never a crash, never unbounded memory.

The decoders run in a worker subprocess (``python tests/test_fuzz_decode.py`` speaks JSON lines on stdin and
stdout; no pickle): a segfault there is a reported finding instead of a dead test run, and its address space is
capped so a bomb shows up as MemoryError instead of taking the machine. Hypothesis generates the inputs here,
derandomized (the same examples on every run), and shrinks any failure to a small input.
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MAX_PIXELS = 89_478_485  # lit_imgcls.data.image.MAX_PIXELS, imported here only by the worker
EXAMPLES = 300
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HEADROOM = 3 << 30  # address space the worker may add to what its imports took: ~10x the largest legal image


# ----------------------------------------------------------------------------------------- the worker process

# entry point -> the only exception type it may raise (None: it must not raise at all)
ALLOWED = {
    "image.decode": "ImageDecodeError",
    "image.check_complete": "ImageDecodeError",
    "transforms.random_resized_crop": "ImageDecodeError",
    "EvalTransform[center]": "ImageDecodeError",
    "EvalTransform[squash]": "ImageDecodeError",
    "encode.encode_file": None,
    "wds.SampleDecoder": "UsageError",
    "Classifier.preprocess[squash]": "ImageError",
    "Classifier.preprocess[center]": "ImageError",
}

# predict's preprocessing, checked on its own by test_predict_findings as well.
_PREDICT_PIL = ("Classifier.preprocess[squash]", "Classifier.preprocess[center]")
# Outcomes tolerated per decoder: none left (predict's own PIL path had four until it went through the contract).
KNOWN: set[tuple[str, str]] = set()
FOUND: dict[tuple[str, str], int] = {}


def _run_entry(name: str, data: bytes, p: dict, tmp: Path) -> dict:
    """Calls one entry point as the code that uses it does; describes what came back."""
    import random

    from types import SimpleNamespace

    from lit_imgcls.data import encode, image, transforms
    from lit_imgcls.data.preprocess import DataConfig, EvalTransform

    c = 1 if p["mode"] == "L" else 3

    def config(mode: str) -> DataConfig:
        return DataConfig((c, p["size"], p["size"]), mode, 0.875, "auto", (0.5,) * c, (0.25,) * c)

    if name == "image.decode":
        return _array(image.decode(data, c))
    if name == "image.check_complete":
        image.check_complete(data)
        return {"shape": [1, 1]}
    if name == "transforms.random_resized_crop":
        return _array(transforms.random_resized_crop(image.decode(data, c), p["size"], p["size"],
                                                     random.Random(p["seed"])))
    if name.startswith("EvalTransform"):
        return _array(EvalTransform(config(name[name.index("[") + 1 : -1]))(data))
    if name == "encode.encode_file":
        path = tmp / "input.img"
        path.write_bytes(data)
        opts = encode.EncodeOptions(resize=p["resize"], center_crop=p["center_crop"], pass_through=p["pass_through"],
                                    encoding=p["encoding"])
        res = encode.encode_file(str(path), opts)
        if res.error is not None:
            return {"skipped": res.error}
        back = image.decode(res.data)  # what was packed must read back, at the size the manifest will record
        return {"shape": list(back.shape[:2]), "recorded": [res.height, res.width], "ext": res.ext}
    if name == "wds.SampleDecoder":
        from lit_imgcls.data.formats.wds import SampleDecoder

        decoder = SampleDecoder(config("center"), p["train"], augment=True, num_classes=10)
        pixels, label = decoder({"__key__": "train00000007", "__url__": "pack/wds/train-000000.tar",
                                 p["key"]: data, "cls": b"3"})
        return {**_array(pixels), "label": label}
    if name.startswith("Classifier.preprocess"):
        from lit_imgcls.classifier import Classifier

        cfg = config(name[name.index("[") + 1 : -1])
        clf = Classifier(None, SimpleNamespace(class_names=["a"], image_shape=cfg.input_size, data_config=cfg))
        return _array(clf.preprocess(data))
    raise KeyError(name)


def _array(a) -> dict:
    a = np.asarray(a)
    return {"shape": list(a.shape), "dtype": str(a.dtype)}


def _serve() -> None:
    """The worker: one JSON request per line in, one JSON answer per entry point out."""
    import resource
    import tempfile

    import lit_imgcls.data.formats.wds  # noqa: F401 - everything imported before the address space is capped
    import lit_imgcls.classifier  # noqa: F401
    import lit_imgcls.data.preprocess  # noqa: F401
    import torchvision  # noqa: F401

    vm = int(next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmSize")).split()[1])
    resource.setrlimit(resource.RLIMIT_AS, (vm * 1024 + HEADROOM, resource.RLIM_INFINITY))
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-decode-"))
    for line in sys.stdin:
        req = json.loads(line)
        data = base64.b64decode(req["data"])
        answers = {}
        for name in req["entries"]:
            try:
                answers[name] = {"ok": True, **_run_entry(name, data, req["params"], tmp)}
            except BaseException as exc:  # noqa: BLE001 - any exception is data for the test to judge
                answers[name] = {"ok": False, "type": type(exc).__name__, "message": str(exc)}
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(json.dumps({"answers": answers, "max_rss_mb": usage.ru_maxrss // 1024}), flush=True)


class Decoders:
    """The test side of the worker: sends one input to many entry points, restarts the worker after a crash."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.calls = 0
        self.max_rss_mb = 0

    def _start(self) -> None:
        env = {**os.environ, "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=Path(__file__).parents[1])

    def run(self, data: bytes, entries=tuple(ALLOWED), **params) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        req = {"data": base64.b64encode(data).decode(), "entries": list(entries), "params": {**DEFAULTS, **params}}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        self.calls += len(entries)
        if not line:  # the worker died: a crash in a decoder, not an exception
            rc = self.proc.wait()
            self.proc = None
            return {name: {"ok": False, "type": "CRASH", "message": f"worker died with exit status {rc}"} for name in entries}
        out = json.loads(line)
        self.max_rss_mb = max(self.max_rss_mb, out["max_rss_mb"])
        return out["answers"]

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


DEFAULTS = {"size": 32, "seed": 0, "mode": "RGB", "train": True, "key": "jpg", "resize": 0,
            "center_crop": False, "pass_through": False, "encoding": ".jpg"}


@pytest.fixture(scope="module")
def decoders():
    d = Decoders()
    yield d
    d.close()
    print(f"\nfuzz: {d.calls} decoder calls, worker peak RSS {d.max_rss_mb} MB, known findings {FOUND}")


# --------------------------------------------------------------------------------------------- the property


def _known(name: str, outcome: str) -> bool:
    if (name, outcome) in KNOWN:
        FOUND[name, outcome] = FOUND.get((name, outcome), 0) + 1
        return True
    return False


def check(answers: dict, params: dict, valid: bool = False, claimed: tuple[int, int] | None = None) -> None:
    """Each answer is a sane result or the entry point's documented error; ``valid``: an undamaged image, which
    must decode; ``claimed``: the (width, height) a header claims, refused when it exceeds the pixel limit."""
    p = {**DEFAULTS, **params}
    for name, a in answers.items():
        if not a["ok"]:
            if _known(name, a["type"]):
                continue
            assert a["type"] == ALLOWED[name], f"{name} raised {a['type']}: {a['message']}"
            assert a["message"].strip() and "\n" not in a["message"], f"{name}: not one line: {a['message']!r}"
            assert not valid, f"{name} refused an undamaged image: {a['message']}"
            continue
        if "skipped" in a:  # encode_file's way of refusing
            assert a["skipped"].strip() and "\n" not in a["skipped"]
            assert not valid, f"{name} skipped an undamaged image: {a['skipped']}"
            continue
        if claimed and claimed[0] * claimed[1] > MAX_PIXELS:
            assert _known(name, "decoded over the pixel limit"), f"{name} decoded a {claimed} image"
            continue
        shape = a["shape"]
        assert a.get("dtype", "uint8") == "uint8", (name, a)
        c = 1 if p["mode"] == "L" else 3
        if name == "transforms.random_resized_crop":
            assert shape[:2] == [p["size"], p["size"]], (name, shape)
        elif name.startswith(("EvalTransform", "Classifier")):
            assert shape == [p["size"], p["size"], c], (name, shape)
        elif name == "image.decode":
            assert len(shape) == (2 if c == 1 else 3) and 0 < shape[0] * shape[1] <= MAX_PIXELS, (name, shape)
        elif name == "wds.SampleDecoder":
            assert a["label"] == 3 and shape == [p["size"], p["size"], c], (name, shape)
        elif name == "encode.encode_file":
            assert shape == a["recorded"] and min(shape) > 0 and a["ext"] in (".jpg", ".png"), (name, a)
        else:
            assert min(shape) > 0, (name, a)


# ------------------------------------------------------------------------------------------------- the inputs

MAGICS = [b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xdb", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"GIF87a", b"BM", b"II*\x00",
          b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"RIFF\x00\x00\x00\x00WEBPVP8L", b"%!PS-Adobe-3.0 EPSF-3.0\n"]
# (format, PIL modes it can save) for the undamaged images mutated below
SAVABLE = [("JPEG", ["L", "RGB", "CMYK"]), ("PNG", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"]), ("GIF", ["L", "P"]),
           ("BMP", ["1", "L", "P", "RGB"]), ("WEBP", ["RGB", "RGBA"]), ("TIFF", ["1", "L", "RGB", "RGBA", "CMYK", "I;16"])]


def encoded(fmt: str, mode: str, w: int, h: int, seed: int, **save) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    img = base.convert("I").convert("I;16") if mode == "I;16" else base.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


params_st = st.fixed_dictionaries({
    "size": st.sampled_from([1, 8, 32, 224]),
    "seed": st.integers(0, 2**16), "mode": st.sampled_from(["RGB", "L"]), "train": st.booleans(),
    "key": st.sampled_from(["jpg", "png", "webp"]), "resize": st.sampled_from([0, 16, 256]),
    "center_crop": st.booleans(), "pass_through": st.booleans(), "encoding": st.sampled_from([".jpg", ".png"]),
})


@st.composite
def images(draw) -> bytes:
    fmt, modes = draw(st.sampled_from(SAVABLE))
    return encoded(fmt, draw(st.sampled_from(modes)), draw(st.integers(1, 40)), draw(st.integers(1, 40)),
                   draw(st.integers(0, 2**16)))


@st.composite
def damaged(draw, data: bytes) -> bytes:
    """``data`` with a few bytes flipped, inserted, deleted, or the end cut off."""
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not b:
            break
        i = draw(st.integers(0, len(b) - 1))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "cut", "ff", "zero"]))
        if kind == "flip":
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del b[i : i + draw(st.integers(1, 64))]
        elif kind == "cut":
            del b[i:]
        else:
            b[i] = 0xFF if kind == "ff" else 0
    return bytes(b)


# Headers that claim (width, height), with a few real bytes of image data behind them.

def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(w: int, h: int) -> bytes:
    idat = zlib.compress(b"\x00" * 4096)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


def jpeg_claiming(w: int, h: int) -> bytes:
    b = bytearray(encoded("JPEG", "RGB", 16, 16, 0))
    sof = b.index(b"\xff\xc0")  # baseline frame header: marker, length, precision, height, width
    b[sof + 5 : sof + 9] = struct.pack(">HH", h, w)
    return bytes(b)


def gif_claiming(w: int, h: int) -> bytes:
    b = bytearray(encoded("GIF", "P", 16, 16, 0))
    b[6:10] = struct.pack("<HH", w, h)  # logical screen
    desc = b.index(b"\x2c", 13)  # image descriptor: left, top, width, height
    b[desc + 5 : desc + 9] = struct.pack("<HH", w, h)
    return bytes(b)


def bmp_claiming(w: int, h: int) -> bytes:
    b = bytearray(encoded("BMP", "RGB", 16, 16, 0))
    b[18:26] = struct.pack("<ii", w, h)
    return bytes(b)


def webp_claiming(w: int, h: int) -> bytes:
    b = bytearray(encoded("WEBP", "RGB", 16, 16, 0, lossless=True))
    at = b.index(b"VP8L") + 9  # chunk id, size, signature byte; then 14 bits width - 1, 14 bits height - 1
    bits = struct.unpack("<I", b[at : at + 4])[0]
    bits = (bits & ~((1 << 28) - 1)) | ((w - 1) & 0x3FFF) | (((h - 1) & 0x3FFF) << 14)
    b[at : at + 4] = struct.pack("<I", bits)
    return bytes(b)


def tiff_claiming(w: int, h: int) -> bytes:
    b = bytearray(encoded("TIFF", "RGB", 16, 16, 0))
    ifd = struct.unpack("<I", b[4:8])[0]
    for n in range(struct.unpack("<H", b[ifd : ifd + 2])[0]):
        at = ifd + 2 + 12 * n
        tag = struct.unpack("<H", b[at : at + 2])[0]
        if tag in (256, 257):  # ImageWidth, ImageLength, rewritten as LONG
            b[at + 2 : at + 12] = struct.pack("<HII", 4, 1, w if tag == 256 else h)
    return bytes(b)


CLAIMS = {"PNG": (png_claiming, 2**31 - 1), "JPEG": (jpeg_claiming, 65535), "GIF": (gif_claiming, 65535),
          "BMP": (bmp_claiming, 2**31 - 1), "WEBP": (webp_claiming, 16384), "TIFF": (tiff_claiming, 2**32 - 1)}


CHEAP = 250_000  # pixels: claims up to this are decoded for real; legal sizes above it only cost time


@st.composite
def claims(draw) -> tuple[str, int, int]:
    """(format, width, height): either cheap to decode, or over the pixel limit (the edge included)."""
    fmt = draw(st.sampled_from(sorted(CLAIMS)))
    top = CLAIMS[fmt][1]
    if draw(st.booleans()):
        w = draw(st.integers(1, min(top, CHEAP)))
        return fmt, w, draw(st.integers(1, min(top, CHEAP // w)))
    edge = MAX_PIXELS // min(top, 9460) + 1
    w = draw(st.one_of(st.sampled_from([min(top, 9460), top]), st.integers(edge, top)))
    return fmt, w, draw(st.one_of(st.sampled_from([MAX_PIXELS // w + 1, top]), st.integers(MAX_PIXELS // w + 1, top)))


# ---------------------------------------------------------------------------------------------------- the tests


@FUZZ
@given(data=st.one_of(st.binary(max_size=512), st.tuples(st.sampled_from(MAGICS), st.binary(max_size=512)).map(b"".join)),
       params=params_st)
def test_random_bytes_are_refused_with_the_documented_error(decoders, data, params):
    check(decoders.run(data, **params), params)


@FUZZ
@given(base=images(), params=params_st, st_data=st.data())
def test_damaged_images_decode_sanely_or_are_refused(decoders, base, params, st_data):
    check(decoders.run(base, **params), params, valid=True)  # undamaged, every entry point reads it
    data = st_data.draw(damaged(base))
    check(decoders.run(data, **params), params)


OWN_PIL = list(ALLOWED)


@FUZZ
@given(claim=claims(), params=params_st)
def test_headers_claiming_huge_images_are_refused_before_decoding(decoders, claim, params):
    fmt, w, h = claim
    check(decoders.run(CLAIMS[fmt][0](w, h), entries=OWN_PIL, **params), params, claimed=(w, h))


@pytest.mark.parametrize("fmt", sorted(CLAIMS))
def test_a_100000_pixel_square_header_is_named_a_decompression_bomb(decoders, fmt):
    w = h = min(100_000, CLAIMS[fmt][1])
    answers = decoders.run(CLAIMS[fmt][0](w, h))
    check(answers, {}, claimed=(w, h))
    for name, a in answers.items():
        said = a.get("message") or a.get("skipped", "")
        assert "too many pixels" in said or "decompression" in said.lower(), (name, said)


def test_thin_strips_decode_without_blowing_up(decoders):
    """A 20000 x 1 strip with its short side at 256 px is 1.3 G pixels: the validation crop must not build it (it
    was a cv2 out-of-memory error), and pack must skip it with a reason (it was a MemoryError out of encode_file);
    a 300 x 1 strip fits the pixel limit but not JPEG's 65500 px side (it was an OSError that stopped the pack)."""
    strip = encoded("PNG", "L", 20000, 1, 0)
    entries = [n for n in OWN_PIL if n != "encode.encode_file"]
    check(decoders.run(strip, entries=entries, size=224), {"size": 224}, valid=True)
    packed = decoders.run(strip, entries=["encode.encode_file"], resize=256)["encode.encode_file"]
    assert "more than --max-pixels" in packed["skipped"]
    packed = decoders.run(encoded("PNG", "L", 300, 1, 0), entries=["encode.encode_file"], resize=256)
    assert "cannot re-encode" in packed["encode.encode_file"]["skipped"]


def test_formats_outside_the_list_are_not_handed_to_their_plugins(decoders):
    """EPS would go to Ghostscript, an interpreter; PSD, ICO and the rest are not what packs and photos hold."""
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    for data in (eps, encoded("ICO", "RGB", 16, 16, 0), encoded("PPM", "RGB", 8, 8, 0)):
        answers = decoders.run(data, entries=OWN_PIL)
        check(answers, {})
        assert all(not a["ok"] or "skipped" in a for a in answers.values()), answers


@pytest.mark.parametrize("case", ["bomb", "over", "strip", "ico"])
def test_predict_findings(decoders, case):
    """predict's preprocessing (both crop modes) on the inputs the decoders above already refuse."""
    data = {"bomb": png_claiming(100_000, 100_000), "over": jpeg_claiming(9460, 9460),
            "strip": encoded("PNG", "L", 20000, 1, 0), "ico": encoded("ICO", "RGB", 16, 16, 0)}[case]
    answers = decoders.run(data, entries=_PREDICT_PIL, size=224)
    for name, a in answers.items():
        if case == "strip":
            assert a["ok"] and a["shape"] == [224, 224, 3], (name, a)
        else:
            assert not a["ok"] and a["type"] == "ImageError", (name, a)


if __name__ == "__main__":
    _serve()
