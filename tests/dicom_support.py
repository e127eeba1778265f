"""DICOM films written from 8-bit films, so that the rendering rule gives the film back.

Each file holds the film's grey levels v (0..255) as stored values in BitsStored bits,
MONOCHROME2 (s grows with v) or MONOCHROME1 (s falls), optionally through a rescale slope
and intercept, and optionally with a window that spans exactly v = 0..255. Either way the
one rendering rule (edge_runtime/readers/dicom.py) must give v back, so the DICOM file and the film
as PNG must get the same model input and the same probability.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
    generate_uid,
)

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def stored_values(gray: np.ndarray, bits: int, monochrome1: bool, window: bool) -> np.ndarray:
    """Stored values for 8-bit grey levels: a window (when given) spans them exactly; without
    one, they spread over the full stored range, rounded (the rule rounds them back)."""
    top = 2**bits - 1
    levels = gray.astype(np.int64)
    if window:
        step = 2 ** (bits - 8)
        stored = levels * step + step // 2  # not starting at 0: the window must do the work
    else:
        stored = np.round(levels * (top / 255.0)).astype(np.int64)
    return (top - stored) if monochrome1 else stored


def film_dataset(
    gray: np.ndarray,
    *,
    bits: int = 16,
    monochrome1: bool = False,
    window: bool = False,
    rescale: tuple[float, float] | None = None,
    modality: str = "DX",
) -> Dataset:
    """An uncompressed single-frame DICOM dataset of an 8-bit film (see the module doc)."""
    stored = stored_values(gray, bits, monochrome1, window)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = modality, "CHEST", "PA"
    ds.PatientID = "TEST-0001"
    ds.Rows, ds.Columns = gray.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = 0
    slope, intercept = rescale or (1.0, 0.0)
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "US"
    if window:
        ends = [
            s * slope + intercept
            for s in stored_values(np.array([0, 255]), bits, monochrome1, True)
        ]
        low, span = min(ends), abs(ends[1] - ends[0])
        # LINEAR (PS3.3 C.11.2.1.2.1): [c - 0.5 - (w-1)/2, c - 0.5 + (w-1)/2] maps to 0..1.
        ds.WindowWidth = span + 1
        ds.WindowCenter = low + 0.5 + span / 2
    ds.PixelData = stored.astype("<u2").tobytes()
    return ds


def write_film(path: Path, gray: np.ndarray, syntax=None, **options) -> Path:
    """film_dataset written to path, compressed with pydicom's encoders when syntax is given."""
    ds = film_dataset(gray, **options)
    if syntax is not None:
        ds.compress(syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_jpeg_baseline(path: Path, gray: np.ndarray, quality: int = 90) -> Path:
    """A lossy JPEG baseline DICOM (8 bits, MONOCHROME2), encoded by Pillow: pydicom has no
    JPEG encoder, and X-ray units that compress lossily mostly write this."""
    from io import BytesIO

    from pydicom.encaps import encapsulate

    jpeg = BytesIO()
    Image.fromarray(gray).save(jpeg, format="JPEG", quality=quality)
    ds = film_dataset(gray, bits=8)
    ds.BitsAllocated = 8
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([jpeg.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    ds.save_as(path, enforce_file_format=True)
    return path


def secondary_capture(gray: np.ndarray) -> Dataset:
    """An 8-bit secondary capture (a film scanned or exported as a picture)."""
    ds = film_dataset(gray, bits=8)
    ds.BitsAllocated = 8
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.PixelData = gray.astype(np.uint8).tobytes()
    return ds


def jpeg_lossless(stored: np.ndarray, bits: int) -> bytes:
    """A JPEG lossless codestream (ITU T.81 process 14, first-order prediction, SV1).

    pydicom has no encoder for it, yet X-ray units often write it; this small encoder lets
    the tests check the decoder path (pylibjpeg-libjpeg) with known pixels. One Huffman
    table gives every difference category (0..16) a 5-bit code.
    """
    values = stored.astype(np.int64)
    rows, columns = values.shape
    predicted = np.empty_like(values)
    predicted[0, 0] = 2 ** (bits - 1)
    predicted[0, 1:] = values[0, :-1]  # first line: the sample to the left
    predicted[1:, 0] = values[:-1, 0]  # first column: the sample above
    predicted[1:, 1:] = values[1:, :-1]  # SV1: the sample to the left
    diff = (values - predicted) % 65536
    diff = np.where(diff > 32768, diff - 65536, diff).ravel()
    size = np.ceil(np.log2(np.abs(diff) + 1)).astype(np.int64)
    extra = np.where(diff > 0, diff, diff - 1) & ((1 << size) - 1)
    # Each sample: its 5-bit category code, then `size` extra bits (none for category 16).
    width = 5 + np.where(size < 16, size, 0)
    code = (size << (width - 5)) | np.where(size < 16, extra, 0)
    position = np.arange(21)
    bits_out = (code[:, None] >> (width[:, None] - 1 - position)) & 1
    bits_out = bits_out[position < width[:, None]]  # row by row: the samples in order
    bits_out = np.concatenate([bits_out, np.ones(-len(bits_out) % 8, np.int64)])
    scan = np.packbits(bits_out.astype(np.uint8)).tobytes().replace(b"\xff", b"\xff\x00")
    counts = bytes([0, 0, 0, 0, 17] + [0] * 11)

    def segment(marker: int, body: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body

    shape = rows.to_bytes(2, "big") + columns.to_bytes(2, "big")
    frame = bytes([bits]) + shape + b"\x01\x01\x11\x00"  # one component, 1x1, table 0
    return (
        b"\xff\xd8"
        + segment(0xC3, frame)
        + segment(0xC4, b"\x00" + counts + bytes(range(17)))
        + segment(0xDA, b"\x01\x01\x00\x01\x00\x00")
        + scan
        + b"\xff\xd9"
    )


def write_jpeg_lossless(path: Path, gray: np.ndarray, **options) -> Path:
    """film_dataset with its pixels JPEG lossless (SV1) encoded by `jpeg_lossless`."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLosslessSV1

    ds = film_dataset(gray, **options)
    stored = np.frombuffer(ds.PixelData, "<u2").reshape(gray.shape)
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.PixelData = encapsulate([jpeg_lossless(stored, int(ds.BitsStored))])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path
