from __future__ import annotations


def verify(out: str, deep: bool = False) -> None:
    """Check a pack against its manifest: every shard present, its size and sha256, and its first sample decodes.

    Exits with code 2 naming each bad file.

    Args:
        out: the pack folder (with manifest.json).
        deep: decode every sample of every WebDataset shard, not just the first.
    """
    from pathlib import Path

    from lit_imgcls.data.image import decode
    from lit_imgcls.data.manifest import read_manifest
    from lit_imgcls.data.pack_check import check_file, iter_tar_samples, shard_files
    from lit_imgcls.errors import UsageError
    from lit_imgcls.printable import printable

    root = Path(out)
    m = read_manifest(root)
    problems = []
    files = shard_files(m)
    for rel, entry in files:
        problem = check_file(root, rel, entry)
        if problem is None and rel.startswith("wds/"):
            try:
                n = 0
                for _, data, label in iter_tar_samples(root / rel):
                    decode(data)
                    if not 0 <= label < len(m["class_names"]):
                        raise ValueError(f"label {label} out of range")
                    n += 1
                    if not deep:
                        break
                if deep and n != entry["samples"]:
                    raise ValueError(f"{n} samples, manifest says {entry['samples']}")
            except Exception as exc:  # any decode or tar failure names the shard
                problem = f"{rel}: cannot read samples: {exc}"
        if problem:
            problems.append(problem)
    if problems:
        raise UsageError(f"{len(problems)} of {len(files)} files fail verification: " + "; ".join(problems))
    print(printable(f"ok: {len(files)} files match {root / 'manifest.json'} (sizes, sha256{', every sample decodes' if deep else ', first samples decode'})"))
