"""Checks an FFCV ``.beton`` file's header, field table, sample metadata and allocation table, with numpy alone.

FFCV trusts its file: a header claiming more samples than the file holds, a pointer past its end or a
``page_size`` of 0 make its Reader, memory manager or compiled decoders read out of bounds, allocate without
limit or crash. So every reader of a pack's ``.beton`` (training and evaluation loaders, ``dataset inspect``,
``dataset verify``) passes it through :func:`read_beton` before FFCV opens it.

The layout is FFCV 1.0.2's (``ffcv/types.py``, ``ffcv/reader.py``, ``ffcv/writer.py``), little-endian:

=================  ==========================================================================================
offset 0           header: version u2 (= 2), num_fields u2, page_size u4, num_samples u8, alloc_table_ptr u8
offset 24          num_fields field descriptors of 1041 bytes: type_id u1, name 16 x u1 (NUL-padded),
                   arguments 1024 x u1
then               num_samples metadata records, one field after another (numpy ``align=True``)
then               the data region: pages of page_size bytes holding images
alloc_table_ptr    the allocation table to the end of the file: (sample_id u8, ptr u8, size u8) per allocation
=================  ==========================================================================================

lit-imgcls writes two fields, ``image`` (RGBImageField: mode u1, width u2, height u2, data_ptr u8) and ``label``
(IntField: int64); those are what is checked and required.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lit_imgcls.data.image import MAX_PIXELS
from lit_imgcls.data.labels import check_labels
from lit_imgcls.errors import UsageError

VERSION = 2
HEADER = np.dtype([("version", "<u2"), ("num_fields", "<u2"), ("page_size", "<u4"), ("num_samples", "<u8"),
                   ("alloc_table_ptr", "<u8")], align=True)
FIELD = np.dtype([("type_id", "<u1"), ("name", ("<u1", 16)), ("arguments", ("<u1", (1024,)))], align=True)
ALLOCATION = np.dtype([("sample_id", "<u8"), ("ptr", "<u8"), ("size", "<u8")])
# type_id -> the field's metadata record (FFCV's Field.metadata_type) for the fields lit-imgcls packs hold
IMAGE_ID, INT_ID = 2, 1
_METADATA = {
    0: np.dtype("<f8"),  # FloatField
    INT_ID: np.dtype("<i8"),  # IntField
    IMAGE_ID: np.dtype([("mode", "<u1"), ("width", "<u2"), ("height", "<u2"), ("data_ptr", "<u8")]),  # RGBImageField
}
RAW, JPG = 1, 0  # RGBImageField's IMAGE_MODES
MAX_FIELDS = 16
MAX_SAMPLES = 10**10  # the manifest's bound too (lit_imgcls.data.manifest.MAX_SAMPLES)
PAGE_SIZES = (2**9, 2**31)  # FFCV takes log2(page_size): a power of two, within reason


@dataclass
class BetonInfo:
    """What a checked ``.beton`` holds: ``labels`` is an int64 (num_samples,) array, in storage order."""

    num_samples: int
    page_size: int
    labels: np.ndarray


def read_beton(path: str | Path, num_classes: int, samples: int | None = None, where: str | None = None) -> BetonInfo:
    """Checks the ``.beton`` file at ``path`` from its header to its allocation table and returns its labels.

    Checked: the version; field count and types (an ``image`` and a ``label`` field); page size (a power of two);
    sample count (bounded, within the file, and ``samples`` when given); the allocation table's place, and every
    allocation lies in the data region and belongs to a sample; every image's pointer is an allocation, its mode
    known, its size positive and within the pixel bound (raw images fill exactly width x height x 3 bytes);
    every label in ``[0, num_classes)`` (:mod:`lit_imgcls.data.labels`). Reads at most the header, the field
    table, the metadata and the allocation table, each bounded by the file's size; never the images.

    Args:
        path: a local ``.beton`` file.
        num_classes: the pack's class count.
        samples: the sample count the manifest gives, if any.
        where: how messages name the file (default: ``path``).

    Raises:
        UsageError: one line naming the file and the first field that is wrong.
    """
    where = where or str(path)
    try:
        return _read(Path(path), num_classes, samples, where)
    except OSError as exc:
        raise UsageError(f"{where}: cannot read it ({exc.strerror or exc})") from None


def _bad(where: str, problem: str) -> UsageError:
    return UsageError(f"{where} is not a readable FFCV file: {problem}; it is damaged or not one `lit-imgcls "
                      "dataset pack` wrote: run `lit-imgcls dataset verify` on the pack, or re-pack")


def _read(path: Path, num_classes: int, samples: int | None, where: str) -> BetonInfo:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < HEADER.itemsize:
            raise _bad(where, f"{size} bytes, shorter than its {HEADER.itemsize}-byte header")
        header = np.frombuffer(f.read(HEADER.itemsize), dtype=HEADER)[0]
        version, num_fields, page_size = int(header["version"]), int(header["num_fields"]), int(header["page_size"])
        num_samples, table_at = int(header["num_samples"]), int(header["alloc_table_ptr"])
        if version != VERSION:
            raise _bad(where, f"header version {version}, not {VERSION}")
        if not 1 <= num_fields <= MAX_FIELDS:
            raise _bad(where, f"header num_fields {num_fields}, not 1 to {MAX_FIELDS}")
        if not (PAGE_SIZES[0] <= page_size <= PAGE_SIZES[1] and page_size & (page_size - 1) == 0):
            raise _bad(where, f"header page_size {page_size}, not a power of two from {PAGE_SIZES[0]} to {PAGE_SIZES[1]}")
        fields_end = HEADER.itemsize + num_fields * FIELD.itemsize
        if fields_end > size:
            raise _bad(where, f"header num_fields {num_fields}: its field table would end past the file's {size} bytes")
        fields = np.frombuffer(f.read(num_fields * FIELD.itemsize), dtype=FIELD)
        names, types = [], []
        for i, field in enumerate(fields):
            type_id = int(field["type_id"])
            if type_id not in _METADATA:
                raise _bad(where, f"field {i} has type {type_id}, not one a lit-imgcls pack holds")
            name = bytes(field["name"]).split(b"\0", 1)[0].decode("ascii", "replace")
            names.append(name)
            types.append(type_id)
        for name, type_id in (("image", IMAGE_ID), ("label", INT_ID)):
            if names.count(name) != 1 or types[names.index(name)] != type_id:
                raise _bad(where, f"no single {name!r} field of type {type_id} (fields: {', '.join(map(repr, names))[:200]})")
        record = np.dtype([("", _METADATA[t]) for t in types], align=True)  # FFCV's get_metadata_type
        if num_samples > MAX_SAMPLES:
            raise _bad(where, f"header num_samples {num_samples}, more than {MAX_SAMPLES}")
        if samples is not None and num_samples != samples:
            raise _bad(where, f"header num_samples {num_samples}, the manifest says {samples}")
        data_at = fields_end + num_samples * record.itemsize
        if data_at > size:
            raise _bad(where, f"header num_samples {num_samples}: its metadata would end past the file's {size} bytes")
        if not data_at <= table_at <= size or (size - table_at) % ALLOCATION.itemsize:
            raise _bad(where, f"header alloc_table_ptr {table_at} is not the start of a table of "
                              f"{ALLOCATION.itemsize}-byte entries between byte {data_at} and the file's end ({size})")
        meta = np.frombuffer(f.read(num_samples * record.itemsize), dtype=record)
        f.seek(table_at)
        table = np.frombuffer(f.read(size - table_at), dtype=ALLOCATION)
    if len(meta) != num_samples or len(table) != (size - table_at) // ALLOCATION.itemsize:
        raise _bad(where, "it changed size while being read")

    ptr, length = table["ptr"], table["size"]
    # In uint64 arithmetic, compared so that nothing overflows: data_at <= ptr <= table_at, size <= table_at - ptr
    bad = np.flatnonzero((table["sample_id"] >= num_samples) | (ptr < data_at) | (ptr > table_at)
                         | (length > np.uint64(table_at) - np.minimum(ptr, np.uint64(table_at))))
    if bad.size:
        a = table[int(bad[0])]
        raise _bad(where, f"allocation {int(bad[0])} (sample {int(a['sample_id'])}, {int(a['size'])} bytes at byte "
                          f"{int(a['ptr'])}) lies outside the data region (bytes {data_at} to {table_at}) or names no "
                          f"sample of {num_samples}")
    image = meta[f"f{names.index('image')}"]
    order = np.argsort(ptr, kind="stable")
    sorted_ptr = ptr[order]
    at = np.minimum(np.searchsorted(sorted_ptr, image["data_ptr"]), max(len(table) - 1, 0))
    found = sorted_ptr[at] == image["data_ptr"] if len(table) else np.zeros(num_samples, bool)
    stored = length[order][at] if len(table) else np.zeros(num_samples, np.uint64)
    w, h = image["width"].astype(np.int64), image["height"].astype(np.int64)
    mode = image["mode"]
    bad = np.flatnonzero(~found | ((mode != RAW) & (mode != JPG)) | (w < 1) | (h < 1) | (w * h > MAX_PIXELS)
                         | (stored == 0) | ((mode == RAW) & (stored != (w * h * 3).astype(np.uint64))))
    if bad.size:
        i = int(bad[0])
        raise _bad(where, f"sample {i}'s image (mode {int(mode[i])}, {int(w[i])}x{int(h[i])}, at byte "
                          f"{int(image['data_ptr'][i])}) is not an allocation of the file or not an image FFCV can "
                          "decode within the pixel bound")
    labels = np.array(meta[f"f{names.index('label')}"], dtype=np.int64)
    check_labels(labels, num_classes, lambda i: f"sample {i} of {where}")
    return BetonInfo(num_samples, page_size, labels)
