"""Writes detector-size DICOM files for measuring decode time and peak memory.

One validation radiograph (tests/fixtures/val/images/1381.png) is upscaled to 2500x3000 with
a little noise (so the codecs cannot compress flat areas to nothing), stored as 16-bit DX
and written uncompressed, as JPEG 2000 Lossless and as JPEG-LS Lossless. Needs numpy,
pillow, pydicom and imagecodecs (PyPI). Then, for each file:

    python benches/large_dicom.py OUT_DIR
    /usr/bin/time -v ./target/release/boneage --no-tta predict OUT_DIR/FILE.dcm --sex f

The results are in docs/benchmarks.md.
"""
import os
import sys

import imagecodecs
import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "..", "tests", "fixtures", "val", "images", "1381.png")
DX = "1.2.840.10008.5.1.4.1.1.1.1"


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
    }
    for name, (syntax, frame) in files.items():
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = DX
        meta.MediaStorageSOPInstanceUID = "2.25.13810" + str(len(name))
        meta.TransferSyntaxUID = syntax
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = DX
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "DX"
        ds.PatientSex = "F"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = pixels.shape
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.WindowCenter = "32768"
        ds.WindowWidth = "65536"
        if frame is None:
            ds.PixelData = pixels.tobytes()
        else:
            ds.PixelData = encapsulate([frame])
            ds["PixelData"].VR = "OB"
        path = os.path.join(out, name)
        ds.save_as(path, enforce_file_format=True)
        print(f"{path}: {os.path.getsize(path) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "large-dicom")
