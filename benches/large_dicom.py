"""Writes detector-size DICOM files for measuring decode time and peak memory.

One validation radiograph (tests/fixtures/val/images/1381.png) is upscaled to 2500x3000 with
a little noise (so the codecs cannot compress flat areas to nothing), stored as 16-bit DX
and written uncompressed, as JPEG 2000 Lossless, JPEG-LS Lossless and JPEG XL Lossless, and
at 12 bits as 12-bit JPEG (quality 90), with the writer of the DICOM test fixtures
(tests/fixtures/dicom/make.py). Needs numpy, pillow, pydicom,
imagecodecs and pyjpegls (PyPI). Then, for each file:

    python benches/large_dicom.py OUT_DIR
    /usr/bin/time -v ./target/release/boneage --no-tta predict OUT_DIR/FILE.dcm --sex f

The results are in docs/benchmarks.md.
"""
import os
import sys

import imagecodecs
import numpy as np
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian

HERE = os.path.dirname(os.path.abspath(__file__))
# The fixtures' writer: the same DX dataset, at detector size here.
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures", "dicom"))
import make  # noqa: E402

SOURCE = make.SOURCE


def main(out):
    os.makedirs(out, exist_ok=True)
    small = Image.open(SOURCE).convert("L").resize((2500, 3000), Image.BICUBIC)
    rng = np.random.default_rng(1381)
    pixels = np.asarray(small, dtype=np.float64) * 257 + rng.normal(0, 200, (3000, 2500))
    pixels = np.clip(np.round(pixels), 0, 65535).astype(np.uint16)
    files = {
        "uncompressed.dcm": (ExplicitVRLittleEndian, None),
        "j2k-lossless.dcm": ("1.2.840.10008.1.2.4.90",
                             imagecodecs.jpeg2k_encode(pixels, level=0, codecformat="j2k")),
        "jls-lossless.dcm": ("1.2.840.10008.1.2.4.80", imagecodecs.jpegls_encode(pixels, level=0)),
        "jxl-lossless.dcm": ("1.2.840.10008.1.2.4.110",
                             imagecodecs.jpegxl_encode(pixels, lossless=True)),
    }
    for name, (syntax, frame) in files.items():
        path = os.path.join(out, name)
        make.dataset(pixels, syntax, frame).save_as(path, enforce_file_format=True)
        print(f"{path}: {os.path.getsize(path) / 2**20:.1f} MiB")
    twelve = (pixels >> 4).astype(np.uint16)
    path = os.path.join(out, "jpeg12.dcm")
    frame = imagecodecs.jpeg8_encode(twelve, level=90, bitspersample=12)
    make.dataset(twelve, "1.2.840.10008.1.2.4.51", frame, bits=12).save_as(
        path, enforce_file_format=True)
    print(f"{path}: {os.path.getsize(path) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "large-dicom")
