from __future__ import annotations


def inspect_pack(out: str) -> None:
    """Show a pack: counts per split and class, class balance, shards, a decoded sample, storage order and copies.

    Warns (on stderr, ``lit-imgcls: warning: ...``) when a split's labels are stored sorted by class, in whole or
    in blocks, judged against a random order of the same labels so that imbalanced classes are no false alarm;
    when val or test has no sample of a class that train has; and when byte-identical images (sha256 of the
    stored bytes) repeat within a split, appear in more than one split (leakage) or carry different labels.
    Duplicates come from the manifest's ``duplicates`` (recorded by ``dataset pack``), else from hashing the
    WebDataset shards; an FFCV-only pack made before they were recorded cannot be checked, and says so.
    When the train split's largest class has at least 3 times the samples of its smallest, a hint line suggests
    ``fit --class-weights auto`` or ``--sampler balanced``.

    Args:
        out: the pack folder (with manifest.json).

    Raises:
        UsageError: no manifest, a malformed one, or a shard that cannot be read.
    """
    from pathlib import Path

    from lit_imgcls.data.balance import skew_hint
    from lit_imgcls.data.manifest import read_manifest
    from lit_imgcls.data.pack_report import (class_range, duplicate_warnings, missing_class_warnings,
                                              unshuffled_warning)
    from lit_imgcls.data.pack_check import duplicates_in_shards, first_sample, shard_files, storage_labels
    from lit_imgcls.printable import printable, warn

    def say(line: str) -> None:
        print(printable(line))  # class names, source and version come from the manifest: no terminal escapes

    root = Path(out)
    m = read_manifest(root)
    names = m["class_names"]
    source, options = m.get("source", {}), m.get("options", {})  # descriptive only: "?" where a manifest lacks them
    say(f"pack {root}: {len(names)} classes, formats {', '.join(m['formats'])}, made {m.get('created', '?')} "
        f"by lit-imgcls {m.get('lit_imgcls_version', '?')}")
    say(f"source {source.get('src', '?')} ({source.get('kind', '?')}), shuffle {options.get('shuffle', '?')} "
        f"(seed {options.get('seed', '?')})")
    dup = m.get("duplicates")
    labels_by_split: dict[str, list[int]] = {}
    if dup is None and all("wds" in e for e in m["splits"].values()):
        # An older pack: hash the stored images, reading the labels in the same pass.
        dup, labels_by_split = duplicates_in_shards(root, m)
    warnings: list[str] = []
    for split, entry in m["splits"].items():
        size = entry.get("image_size")
        dims = f", images {size['min'][0]}x{size['min'][1]} to {size['max'][0]}x{size['max'][1]} px" if size else ""
        say(f"  {split}: {entry['count']} samples; {class_range(entry['per_class'], names)}{dims}")
        labels = labels_by_split[split] if split in labels_by_split else storage_labels(root, m, split)
        warning = unshuffled_warning(labels, names)
        if warning:
            warnings.append(f"{split}: {warning}")
    warnings += missing_class_warnings(m["splits"], names)
    hint = skew_hint(m["splits"]["train"]["per_class"], "ffcv" in m["formats"]) if "train" in m["splits"] else None
    if hint:
        say(f"  hint: train: {hint}")
    if dup is None:
        say("  duplicates: not checked (an FFCV-only pack made before lit-imgcls recorded them; re-pack with "
            "`lit-imgcls dataset pack --format both` to check)")
    else:
        warnings += duplicate_warnings(dup, names)
        found = (f"{dup['groups']} images stored more than once ({dup['copies']} extra copies)" if dup.get("groups")
                 else "none")
        say(f"  duplicates (sha256 of the stored images): {found}")
    for warning in warnings:
        warn(warning)
    files = shard_files(m)
    total = sum(e["bytes"] for _, e in files)
    say(f"  files: {len(files)} ({total / 1e6:.1f} MB); skipped at pack time: {len(m.get('skipped', []))}")
    split = next(iter(m["splits"]))
    sample = first_sample(root, m, split)
    if sample is not None:
        img, label = sample
        name = names[label] if 0 <= label < len(names) else "outside the classes: run `lit-imgcls dataset verify`"
        say(f"  first {split} sample: {img.width}x{img.height} {img.mode}, label {label} ({name})")
