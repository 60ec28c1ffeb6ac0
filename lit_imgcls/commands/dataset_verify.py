from __future__ import annotations


def verify(out: str, deep: bool = False) -> None:
    """Check a pack against its manifest: its fields, each shard's size and sha256, labels, FFCV headers, decoding.

    In detail: the manifest's fields, every shard present, its size and sha256, its first sample decodes with a
    label in range, and each FFCV file's header, allocation table and labels.

    Exits with code 2 naming each bad file. The checks are the readers' own (:func:`~lit_imgcls.data.manifest.
    check_manifest`, :func:`~lit_imgcls.data.labels.parse_label`, :func:`~lit_imgcls.data.formats.beton.read_beton`).

    Args:
        out: the pack folder (with manifest.json).
        deep: decode every sample of every WebDataset shard, not just the first.
    """
    from pathlib import Path

    from lit_imgcls.data.formats.beton import read_beton
    from lit_imgcls.data.image import decode
    from lit_imgcls.data.manifest import read_manifest
    from lit_imgcls.data.pack_check import check_file, iter_tar_samples, shard_files
    from lit_imgcls.errors import UsageError
    from lit_imgcls.printable import printable

    root = Path(out)
    m = read_manifest(root)
    num_classes = len(m["class_names"])
    problems = []
    files = shard_files(m)
    for rel, entry in files:
        problem = check_file(root, rel, entry)
        if problem is None and rel.startswith("wds/"):
            try:
                n = 0
                for _, data, _ in iter_tar_samples(root / rel, num_classes):
                    decode(data)
                    n += 1
                    if not deep:
                        break
                if deep and n != entry["samples"]:
                    raise ValueError(f"{n} samples, manifest says {entry['samples']}")
            except Exception as exc:  # noqa: BLE001 - any decode, label or tar failure names the shard
                problem = f"{rel}: cannot read samples: {exc}"
        elif problem is None:  # a .beton: header, pointers and labels (cheap: the images are not read)
            try:
                read_beton(root / rel, num_classes, entry["samples"], rel)
            except UsageError as exc:
                problem = str(exc)
        if problem:
            problems.append(problem)
    if problems:
        raise UsageError(f"{len(problems)} of {len(files)} files fail verification: " + "; ".join(problems))
    print(printable(f"ok: {len(files)} files match {root / 'manifest.json'} (sizes, sha256"
                    f"{', every sample decodes' if deep else ', first samples decode'}"
                    f"{', FFCV headers and labels' if any(rel.endswith('.beton') for rel, _ in files) else ''})"))
