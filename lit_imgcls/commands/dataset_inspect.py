from __future__ import annotations


def inspect_pack(out: str) -> None:
    """Show a pack: counts per split and class, class balance, shards, a decoded sample, and storage order.

    Warns when labels sit in long runs of one class (an unshuffled pack) and says what that does to training.

    Args:
        out: the pack folder (with manifest.json).
    """
    import sys
    from pathlib import Path

    from lit_imgcls.data.manifest import read_manifest, unshuffled_warning
    from lit_imgcls.data.pack_check import first_sample, shard_files, storage_labels

    root = Path(out)
    m = read_manifest(root)
    names = m["class_names"]
    source, options = m.get("source", {}), m.get("options", {})  # descriptive only: "?" where a manifest lacks them
    print(f"pack {root}: {len(names)} classes, formats {', '.join(m['formats'])}, made {m.get('created', '?')} "
          f"by lit-imgcls {m.get('lit_imgcls_version', '?')}")
    print(f"source {source.get('src', '?')} ({source.get('kind', '?')}), shuffle {options.get('shuffle', '?')} "
          f"(seed {options.get('seed', '?')})")
    for split, entry in m["splits"].items():
        per = entry["per_class"]
        lo, hi = min(range(len(per)), key=per.__getitem__), max(range(len(per)), key=per.__getitem__)
        size = entry.get("image_size")
        dims = f", images {size['min'][0]}x{size['min'][1]} to {size['max'][0]}x{size['max'][1]} px" if size else ""
        print(f"  {split}: {entry['count']} samples; per class {per[lo]} ({names[lo]}) to {per[hi]} ({names[hi]}){dims}")
        labels = storage_labels(root, m, split)
        warning = unshuffled_warning(labels, names)
        if warning:
            print(f"lit-imgcls: warning: {split}: {warning}", file=sys.stderr)
    files = shard_files(m)
    total = sum(e["bytes"] for _, e in files)
    print(f"  files: {len(files)} ({total / 1e6:.1f} MB); skipped at pack time: {len(m.get('skipped', []))}")
    split = next(iter(m["splits"]))
    sample = first_sample(root, m, split)
    if sample is not None:
        img, label = sample
        name = names[label] if 0 <= label < len(names) else "outside the classes: run `lit-imgcls dataset verify`"
        print(f"  first {split} sample: {img.width}x{img.height} {img.mode}, label {label} ({name})")
