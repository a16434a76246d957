"""Writes samples/1724.dcm: a 16-bit DICOM (DX, MONOCHROME2) of RSNA radiograph 1724 with
patient tags, so the sample set exercises the DICOM path. Needs pydicom, numpy, pillow.

    python scripts/make-sample-dicom.py ../shared/data/rsna-100px/images/1724.png samples/1724.dcm
"""
import sys

import numpy as np
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

src, dst = sys.argv[1], sys.argv[2]
pixels = np.asarray(Image.open(src).convert("L"), dtype=np.uint16) * 257
meta = FileMetaDataset()
meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # DX for presentation
meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[src])
meta.TransferSyntaxUID = ExplicitVRLittleEndian
ds = FileDataset(dst, {}, file_meta=meta, preamble=b"\0" * 128)
ds.SOPClassUID = meta.MediaStorageSOPClassUID
ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
ds.Modality = "DX"
ds.PatientID = "SAMPLE-1724"
ds.PatientSex = "M"
ds.PatientBirthDate = "20130115"
ds.StudyDate = "20240720"
ds.AccessionNumber = "RSNA1724"
ds.BodyPartExamined = "HAND"
ds.Laterality = "L"
ds.SamplesPerPixel = 1
ds.PhotometricInterpretation = "MONOCHROME2"
ds.Rows, ds.Columns = pixels.shape
ds.BitsAllocated = 16
ds.BitsStored = 16
ds.HighBit = 15
ds.PixelRepresentation = 0
ds.WindowCenter = "32768"
ds.WindowWidth = "65536"
ds.PixelData = pixels.tobytes()
ds.save_as(dst, enforce_file_format=True)
print(f"wrote {dst}")
