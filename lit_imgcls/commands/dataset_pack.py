from __future__ import annotations

from typing import Literal, Optional

from lit_imgcls.data.image import MAX_PIXELS


def pack(
    src: str,
    out: str,
    format: Literal["wds", "ffcv", "both"] = "wds",
    root: Optional[str] = None,
    recursive: bool = False,
    list: bool = False,
    train_ratio: float = 1.0,
    test_ratio: float = 0.0,
    shuffle: bool = True,
    seed: int = 0,
    resize: int = 0,
    center_crop: bool = False,
    quality: int = 95,
    pass_through: bool = False,
    encoding: Literal[".jpg", ".png"] = ".jpg",
    num_workers: int = 1,
    shard_size: str = "10000",
    exts: str = ".jpg,.jpeg,.png,.bmp,.webp,.tif,.tiff,.gif",
    data_dir: Optional[str] = None,
    max_pixels: int = MAX_PIXELS,
) -> None:
    """Pack images into shuffled WebDataset tar shards and/or FFCV .beton files, with a JSON manifest.

    SRC is an image folder (a subfolder per class), an im2rec list (.lst: index<TAB>label<TAB>path), a CSV
    (path,label), or a built-in dataset (mnist, cifar10). As in im2rec, the paths in a list are relative to
    --root, both in the lists --list writes and in the .lst/.csv files read; without --root, relative to the
    list's own folder (so `dataset pack DIR LISTS --list`, then `dataset pack LISTS/train.lst OUT`, works from
    any folder). A pack with no usable sample, or a split the ratios ask for that ends with none, is an error.
    Files that cannot be used (empty, not images, truncated, too large) are skipped and listed, with the reason,
    in the manifest's "skipped". Output: OUT/wds/<split>-NNNNNN.tar, OUT/ffcv/<split>.beton, OUT/manifest.json.
    A .lst or .csv takes its class names from a classes.txt beside it (line N names label N-1), as --list writes.

    After packing, warnings (stderr, exit code still 0) name what would mislead training: a split stored sorted
    by class (judged against a random order of the same class counts, so imbalanced classes are no false alarm);
    val or test without a class that train has; byte-identical images (sha256 of the stored bytes) repeated
    within a split, stored in more than one split (leakage), or stored with different labels. The manifest's
    "duplicates" records the counts and up to 20 example groups; `dataset inspect` shows them again.

    Safe to interrupt, kill -9 included: OUT then holds the previous pack, complete, or no manifest at all (the
    next pack or reader puts back a previous pack that the final swap had moved aside), never a mix. One pack at
    a time may write into OUT; a second one is refused. A disk that fills up ends the pack with one line (exit 1),
    the previous pack intact.

    Args:
        src: what to pack: a folder, a .lst or .csv file, or mnist / cifar10.
        out: output folder.
        format: wds (WebDataset tar shards), ffcv (.beton) or both.
        root: folder that the paths of a .lst/.csv SRC, and those --list writes, are relative to (im2rec's root);
            default: the list's own folder.
        recursive: take images from any depth below each class folder.
        list: only write the im2rec lists (OUT/train.lst, val.lst, test.lst; paths relative to --root, else to
            OUT) and the class map OUT/classes.txt, and stop: `dataset pack OUT/train.lst` (with the same --root)
            then finds the images and the class names. Only lists lit-imgcls wrote there (recorded in
            OUT/.lit-imgcls-lists) and nobody changed since are replaced; a file of your own of those names is
            refused.
        train_ratio: share of the samples for the train split.
        test_ratio: share for the test split; the rest is the val split.
        shuffle: shuffle before splitting and packing; --no-shuffle keeps source order (dangerous: see the warning).
        seed: seed of the shuffle.
        resize: resize the shorter side to this many pixels (0 keeps the size).
        center_crop: crop the centre square before resizing.
        quality: JPEG quality of re-encoded images.
        pass_through: keep the original bytes of JPEG/PNG files that need no change (no resize, crop or rotation).
        encoding: .jpg or .png for re-encoded images (built-in datasets use .png, exact pixels).
        num_workers: processes that decode and encode in parallel.
        shard_size: samples per tar shard (10000) or bytes per shard (500MB).
        exts: file extensions taken from folders.
        data_dir: where the built-in dataset's files are.
        max_pixels: larger images, and images that --resize would make larger, are refused (decompression-bomb guard).
    """
    import sys

    from lit_imgcls.data.encode import EncodeOptions
    from lit_imgcls.data.pack import PackOptions, pack_dataset
    from lit_imgcls.errors import UsageError

    if not 1 <= quality <= 100:
        raise UsageError(f"quality must lie in 1..100, got {quality}")
    if resize < 0 or num_workers < 1 or max_pixels < 1:
        raise UsageError("resize must be >= 0, num_workers and max_pixels >= 1")
    ext_list = tuple(e.strip().lower() if e.strip().startswith(".") else "." + e.strip().lower() for e in exts.split(",") if e.strip())
    opts = PackOptions(format=format, shuffle=shuffle, seed=seed, train_ratio=train_ratio, test_ratio=test_ratio,
                       shard_size=shard_size, num_workers=num_workers)
    enc = EncodeOptions(resize=resize, center_crop=center_crop, quality=quality, pass_through=pass_through,
                        encoding=encoding, max_pixels=max_pixels)
    from lit_imgcls.printable import printable

    manifest = pack_dataset(src, out, opts, enc, root=root, recursive=recursive, exts=ext_list, data_dir=data_dir,
                            list_only=list)
    if list:
        print("wrote " + ", ".join(manifest["lists"]))
        return
    counts = ", ".join(f"{s} {v['count']}" for s, v in manifest["splits"].items())
    print(f"packed {counts} samples of {len(manifest['class_names'])} classes into {out} ({', '.join(manifest['formats'])})")
    if manifest["skipped"]:
        print(f"skipped {len(manifest['skipped'])} files (see 'skipped' in {out}/manifest.json), e.g.:", file=sys.stderr)
        for row in manifest["skipped"][:5]:
            print(printable(f"  {row['path']}: {row['reason']}"), file=sys.stderr)  # a file name is any bytes
