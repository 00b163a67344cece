#!/usr/bin/env python3
"""Writes the time-series data that ships in data/ from two PyPI wheels:

  statsmodels  statsmodels/datasets/sunspots/src/sunspots_monthly.dat  (public domain)
               -> data/sunspots/sunspots_monthly.csv  (month,sunspots; 3126 months, 1749-01 .. 2009-06)
  sktime 1.2.0 sktime/datasets/data/Airline/Airline.csv                (BSD-3-Clause)
               -> data/airline/airline.csv             (month,passengers; 144 months)
               sktime/datasets/data/{GunPoint,ItalyPowerDemand,JapaneseVowels}/*_{TRAIN,TEST}.ts
               -> data/ucr/                            (UCR/UEA archives, .ts format, as shipped)
               and the sktime licence -> data/ucr/LICENSE, data/airline/LICENSE

Run:  pip download --no-deps statsmodels sktime==1.2.0 -d /tmp/wheels
      python3 tools/make_series_data.py /tmp/wheels
Only the standard library is needed.
"""
import glob
import os
import re
import sys
import zipfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")


def wheel(folder, name):
    found = sorted(glob.glob(os.path.join(folder, name + "-*.whl")))
    if not found:
        sys.exit(f"no {name} wheel in {folder}")
    return zipfile.ZipFile(found[-1])


def write(rel, data):
    path = os.path.join(ROOT, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    print("wrote", os.path.normpath(path), file=sys.stderr)


def sunspots(z):
    text = z.read("statsmodels/datasets/sunspots/src/sunspots_monthly.dat").decode()
    rows = ["month,sunspots"]
    for line in text.splitlines():
        m = re.match(r"^(\d{4})\s+(.*)$", line)
        if not m:
            continue
        for i, v in enumerate(m.group(2).split()):
            rows.append(f"{m.group(1)}-{i + 1:02d},{float(v):.1f}")
    assert len(rows) - 1 == 3126, len(rows) - 1
    write("sunspots/sunspots_monthly.csv", ("\n".join(rows) + "\n").encode())


def sktime(z):
    licence = z.read("sktime-1.2.0.dist-info/licenses/LICENSE")
    airline = z.read("sktime/datasets/data/Airline/Airline.csv").decode().splitlines()
    assert airline[0] == "Date,Passengers", airline[0]
    write("airline/airline.csv", ("\n".join(["month,passengers"] + airline[1:]) + "\n").encode())
    write("airline/LICENSE", licence)
    for name in ["GunPoint", "ItalyPowerDemand", "JapaneseVowels"]:
        for split in ["TRAIN", "TEST"]:
            f = f"{name}_{split}.ts"
            write(f"ucr/{f}", z.read(f"sktime/datasets/data/{name}/{f}"))
    write("ucr/LICENSE", licence)


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else "."
    sunspots(wheel(folder, "statsmodels"))
    sktime(wheel(folder, "sktime-1.2.0"))


if __name__ == "__main__":
    main()
