"""Write the fixed train/validation split used by every training run and by `boneage eval`.

Stratified by sex and by 12-month bone-age band so that the validation set has the same
age/sex mix as the training set. The seed is fixed; the output is committed, so the split
never changes under a model that was measured on it.

    python split.py --labels ../../../shared/data/rsna-100px/labels.csv --out split.csv
"""
import argparse
import csv
import random
from collections import defaultdict

SEED = 20171
VAL_FRACTION = 0.10


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    rows = list(csv.DictReader(open(args.labels, newline="")))
    strata = defaultdict(list)
    for r in rows:
        strata[(r["male"], int(r["boneage"]) // 12)].append(r["id"])
    rng = random.Random(SEED)
    val = set()
    for key in sorted(strata):
        ids = sorted(strata[key], key=int)
        rng.shuffle(ids)
        n_val = round(len(ids) * VAL_FRACTION)
        val.update(ids[:n_val])
    with open(args.out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "split"])
        for r in sorted(rows, key=lambda r: int(r["id"])):
            w.writerow([r["id"], "val" if r["id"] in val else "train"])
    print(f"{len(rows)} images: {len(rows) - len(val)} train, {len(val)} val -> {args.out}")


if __name__ == "__main__":
    main()
