from __future__ import annotations


def photos(out: str, train_per_class: int = 200, val_per_class: int = 50, classes: int = 14, seed: int = 0,
           quality: int = 90, num_workers: int = 1) -> None:
    """Make the photo corpus: ImageNet-sized JPEGs cut from scikit-image's bundled photos, a class per photo.

    Writes OUT/train/<class>/*.jpg and OUT/val/<class>/*.jpg (random crops, scales 300-500 px, flips, colour
    jitter); the same seed gives the same files. Pack it with `lit-imgcls dataset pack OUT/train ...`.

    Args:
        out: output folder.
        train_per_class: training images per class.
        val_per_class: validation images per class (0: no val folder).
        classes: how many of the 14 photos to use as classes.
        seed: seed of the crops and jitter.
        quality: JPEG quality.
        num_workers: processes making images in parallel.
    """
    from lit_imgcls.data.photos import make_photo_corpus

    counts = make_photo_corpus(out, train_per_class, val_per_class, seed, classes, quality, num_workers)
    print(f"wrote {counts['train']} training and {counts['val']} validation JPEGs of {classes} classes to {out}")
