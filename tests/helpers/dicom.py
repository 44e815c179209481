"""DICOM files written for the tests: ``write_dicom`` (an ophthalmic photograph by default), whose
header carries the patient identifiers ``PHI``."""

from __future__ import annotations

import numpy as np
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset

OP_8BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
INSTANCE_UID = "1.2.826.0.1.3680043.8.498.12345"
PHI = {"PatientName": "Doe^Jane", "PatientID": "PID-998877", "PatientBirthDate": "19561231",
       "AccessionNumber": "ACC-4242", "InstitutionName": "Saint Nowhere Eye Hospital"}


def write_dicom(path, pixels, *, photometric="RGB", sop_class=OP_8BIT,
                syntax=uid.ExplicitVRLittleEndian, planar=0, bits_stored=8, frames=None,
                pixel_data=None, laterality="R", laterality_keyword="ImageLaterality",
                instance=INSTANCE_UID):
    """Write a DICOM file holding ``pixels`` (H×W×3 or H×W, or frames×… with ``frames``)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = instance
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = instance
    ds.Modality = "OP" if sop_class == OP_8BIT else "XC"
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    ds.StudyDate = "20240102"
    if laterality is not None:
        setattr(ds, laterality_keyword, laterality)
    colour = pixels.shape[-1] == 3 and pixels.ndim == (4 if frames else 3)
    ds.Rows, ds.Columns = pixels.shape[(1 if frames else 0):][:2]
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric
    if colour:
        ds.PlanarConfiguration = planar
    if frames:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if pixel_data is None:
        stored = pixels.transpose(2, 0, 1) if colour and planar else pixels
        pixel_data = np.ascontiguousarray(stored).astype(f"<u{ds.BitsAllocated // 8}").tobytes()
    if pixel_data is not False:
        ds.PixelData = pixel_data
        if syntax.is_encapsulated:
            ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path
