"""Compute the official CIFAR-10 fingerprints and digest table from a lossless copy.

This is how ``erav1.utils.cifar10.FINGERPRINTS`` and ``cifar10_digests.npz`` were made, from the
PNG copy that was checked pixel for pixel against the official batch files:

    python scripts/fingerprint_cifar10.py ../shared/data/cifar10-png.zip --write-table

It prints each split's fingerprint (to compare with the constants) and, with
``--write-table``, rewrites the digest table next to the module.
"""

from __future__ import annotations

import argparse

import numpy as np

from erav1.utils import cifar10
from erav1.utils.data import load_image_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("copy", help="an image folder or .zip of the official pixels (train/<class>/*, test/<class>/*)")
    parser.add_argument("--write-table", action="store_true", help=f"rewrite {cifar10.DIGEST_TABLE.name}")
    args = parser.parse_args()

    train, test = load_image_folder(args.copy)
    table = {}
    for split, part in (("train", train), ("test", test)):
        digests = cifar10.image_digests(cifar10.nhwc(part.images), part.labels.numpy())
        known = cifar10.FINGERPRINTS[split]
        found = cifar10.fingerprint(cifar10.nhwc(part.images), part.labels.numpy())
        verdict = "matches" if found == known else "differs from"
        print(f"{split}: {len(digests):,} images, fingerprint {found} ({verdict} the package's constant)")
        table[split] = np.sort(cifar10.digest_prefixes(digests))
    if args.write_table:
        np.savez_compressed(cifar10.DIGEST_TABLE, **table)
        print(f"wrote {cifar10.DIGEST_TABLE}")


if __name__ == "__main__":
    main()
