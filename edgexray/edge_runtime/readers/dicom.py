"""DICOM films to the 8-bit grey film the model reads, by one rendering rule.

The rule, written once and used by the host and the device alike:

1. the modality LUT: Rescale Slope/Intercept, or a Modality LUT Sequence;
2. the VOI LUT Sequence, else the FIRST window (Window Center/Width, honouring VOI LUT
   Function: LINEAR, LINEAR_EXACT or SIGMOID), else the full stored range (BitsStored,
   through the modality LUT) when the file has neither;
3. MONOCHROME1 inverted (white is a low value there);
4. rounded to 8 bits.

The 8-bit film then goes through the model's preprocessing (resize, equalise) unchanged. Only
single-frame MONOCHROME1/MONOCHROME2 images are films: multi-frame, colour and non-image
objects (structured reports, presentation states, RT objects, anything without pixel data)
are refused with the reason.

pydicom (and pylibjpeg with its plugins for compressed transfer syntaxes) is imported only
when a DICOM file is read: without it, the film gets a one-line error naming what to
install, and JPEG/PNG users never need it.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import warnings
from pathlib import Path

import numpy as np

from ..errors import ImageError
from . import identity
from .files import MAX_PIXELS, bomb_message, head, open_regular

# Host: the pip extra. Device (the bundle ships this folder as the top-level package
# "edge_runtime"): the bundle's optional requirements file.
INSTALL_HINT = (
    'pip install "edgexray[dicom]"'
    if __package__ and __package__.startswith("edgexray.")
    else ".venv/bin/pip install --only-binary=:all: -r requirements-dicom.txt"
)
DICOM_SUFFIX = ".dcm"
PREAMBLE = 128  # bytes before the b"DICM" magic of a DICOM Part 10 file
MAGIC = b"DICM"
# Decoded pixel bytes allowed before decoding: a 16-bit film at infer's pixel limit. The
# rendering then holds one float32 copy (4 bytes a pixel) and the 8-bit film.
MAX_PIXEL_BYTES = 2 * MAX_PIXELS
# The file itself is read whole: its pixel data, plus headers far smaller than this slack.
MAX_FILE_BYTES = MAX_PIXEL_BYTES + 16 * 2**20
PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")
# Rescaled values are computed in float32: a range beyond this has overflowed to inf.
FLOAT32_LIMIT = float(np.finfo(np.float32).max)
COLOUR_PHOTOMETRICS = ("RGB", "YBR", "PALETTE", "HSV", "ARGB", "CMYK")
# The image storage SOP classes a chest film arrives as (PS3.4 B.5): computed radiography,
# digital X-ray for presentation and for processing, and secondary capture (a film
# digitised or exported by a workstation). The node negotiates these alone.
FILM_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "CR Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
}
# SOP classes that are not films, by UID prefix: refused even when they carry pixel data.
REFUSED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.": "a structured report (SR)",
    "1.2.840.10008.5.1.4.1.1.11.": "a presentation state",
    "1.2.840.10008.5.1.4.1.1.481.": "a radiotherapy (RT) object",
    "1.2.840.10008.5.1.4.1.1.104.": "an encapsulated document",
    "1.2.840.10008.5.1.4.1.1.66": "a raw data, registration or segmentation object",
    "1.2.840.10008.1.3.10": "a media directory (DICOMDIR)",
}
# Tags a caller may need, when present: the scope guard reads the first ones (and the
# age ones), the record the film's identity (identity.IDENTITY).
TAGS = tuple(
    dict.fromkeys(
        (
            "Modality",
            "BodyPartExamined",
            "ViewPosition",
            "PatientID",
            "SOPClassUID",
            "PhotometricInterpretation",
            "BitsStored",
            "PatientAge",
            "PatientBirthDate",
            "StudyDate",
            "AcquisitionDate",
            "BurnedInAnnotation",
            *identity.KEYWORDS,
        )
    )
)
# How to make a film of a colour image (the node's users meet it with img2dcm's JPEGs).
CONVERT_HINT = (
    ": convert it to a greyscale film first (a JPEG or PNG: edgexray to-dicom IMAGE "
    "FILM.dcm; a DICOM file: dcmj2pnm +on FILM.dcm film.png, then the same)"
)
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


def has_preamble(path: str | Path) -> bool:
    """True when path is a regular file starting with the 128-byte preamble and b"DICM"
    (a FIFO or a device is never read)."""
    return head(path, PREAMBLE + len(MAGIC))[PREAMBLE:] == MAGIC


def _pydicom(where: str):
    try:
        import pydicom
        import pydicom.pixels  # noqa: F401  (pydicom 3: the decoders and LUT functions)
    except ImportError:
        raise ImageError(f"{where}: reading DICOM needs pydicom: {INSTALL_HINT}") from None
    _quiet(logging.getLogger("pydicom"))
    return pydicom


def _quiet(logger: logging.Logger) -> None:
    """Keep pydicom's log (its decoders log a whole traceback when a film is corrupt, and
    a warning per odd value) off the user's screen: a film's record is the one place a
    problem with it is reported. A NullHandler, so Python's last-resort handler stays
    silent too."""
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
    logger.propagate = False


def read_film(path_or_dataset, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, dict]:
    """The 8-bit grey film of a DICOM file (or a pydicom Dataset) and what was done to it.

    A Dataset (e.g. received over the network) needs its file_meta.TransferSyntaxUID, as
    a file has, for its pixel data to be decoded.

    Returns:
        (film, info): film is uint8 (rows, columns); info has "rendering", a short
        description of the rule applied, and "tags" (TAGS present in the file).

    Raises:
        ImageError: pydicom or a decoder plugin is missing, the file is not DICOM, is not
            a single-frame greyscale image, is too large, or its pixel data is corrupt.
    """
    where = _name(path_or_dataset)
    pydicom = _pydicom(where)
    # pydicom warns about files it can read all the same (odd VRs, padding); the record
    # is the one place a problem is reported, so they do not reach stderr.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(path_or_dataset, pydicom.Dataset):
            dataset = path_or_dataset
        else:
            dataset = _read(pydicom, path_or_dataset)
        _check_is_film(dataset, where)
        _check_size(dataset, where, max_pixels)
        _check_codestream(dataset, where)
        pixels = _decode(pydicom, dataset, where)
        film, rendering = render(dataset, pixels, where)
        tags = {k: _plain(dataset.get(k)) for k in TAGS if dataset.get(k) not in (None, "")}
    return film, {"rendering": rendering, "tags": tags}


def _name(path_or_dataset) -> str:
    if isinstance(path_or_dataset, (str, Path)):
        return str(path_or_dataset)
    filename = getattr(path_or_dataset, "filename", None)
    return str(filename or f"DICOM dataset {path_or_dataset.get('SOPInstanceUID', '')}".strip())


def _plain(value):
    return value if isinstance(value, int) else str(value)


def _read(pydicom, path):
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            raise ImageError(f"{path}: an empty file (0 bytes), not a DICOM film")
        if size > MAX_FILE_BYTES:
            raise ImageError(f"{path}: {size} bytes is over the {MAX_FILE_BYTES} limit for DICOM")
        try:
            # A .dcm file without the preamble (written by some older software) is still
            # read; any other name must have it, so stray files are not parsed as DICOM.
            dataset = pydicom.dcmread(handle, force=str(path).lower().endswith(DICOM_SUFFIX))
        except Exception as err:  # pydicom raises many types for malformed files
            raise ImageError(f"{path}: not a readable DICOM file ({_first_line(err)})") from None
    if not _has_header(dataset):
        raise ImageError(f"{path}: not a DICOM file (no DICOM header could be read)")
    return dataset


def _has_header(dataset) -> bool:
    """Whether a dataset read with force holds any DICOM at all: file meta, or one of the
    attributes every DICOM object has. Random bytes read with force give neither."""
    meta = getattr(dataset, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return True
    return any(keyword in dataset for keyword in ("SOPClassUID", "SOPInstanceUID", "Modality"))


def _sop_class(dataset) -> str:
    """The object's SOP class: its own attribute, else the file meta's (a DICOMDIR has
    only the latter)."""
    meta = getattr(dataset, "file_meta", None)
    found = dataset.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta else "")
    return str(found or "")


def _first_line(err: Exception) -> str:
    """An exception's message on one line (pydicom lists each plugin's reason on its own)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(lines).replace(":;", ":") or type(err).__name__


def _check_is_film(dataset, where: str) -> None:
    """Refuse, with the reason, what is not a single-frame greyscale image."""
    sop_class = _sop_class(dataset)
    for prefix, what in REFUSED_SOP_CLASSES.items():
        if sop_class.startswith(prefix):
            raise ImageError(f"{where}: not a film: {what}")
    if "PixelData" not in dataset:
        if sop_class in FILM_CLASSES:  # an image object cut before its pixels
            raise ImageError(
                f"{where}: refused: an image object without pixel data (a truncated file?)"
            )
        raise ImageError(f"{where}: not a film: a DICOM object without pixel data")
    if not dataset.PixelData:
        raise ImageError(f"{where}: refused: the pixel data is empty")
    frames = _int(dataset, "NumberOfFrames", 1, where)
    if frames != 1:
        raise ImageError(f"{where}: refused: {frames} frames (only single-frame films are read)")
    samples = _int(dataset, "SamplesPerPixel", 1, where)
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip()
    if samples != 1 or photometric not in PHOTOMETRICS:
        colour = samples != 1 or photometric.startswith(COLOUR_PHOTOMETRICS)
        raise ImageError(
            f"{where}: refused: {'a colour image' if colour else 'not a greyscale film'} "
            f"({photometric or 'no photometric interpretation'}, {samples} samples per "
            f"pixel); only MONOCHROME1/MONOCHROME2 films are read{CONVERT_HINT if colour else ''}"
        )


def _float(value) -> float:
    """A DICOM value as a number; NaN when it is none (text, a list)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _int(dataset, keyword: str, default: int, where: str = "DICOM") -> int:
    """A whole-number attribute, default when it is absent or empty.

    Raises:
        ImageError: it is not a whole number ('ab', 1.5).
    """
    value = dataset.get(keyword)
    if value in (None, ""):
        return default
    number = _float(value)
    if not number.is_integer():
        raise ImageError(f"{where}: refused: {keyword} {str(value)!r} is not a whole number")
    return int(number)


def _check_size(dataset, where: str, max_pixels: int) -> None:
    """Bound memory before decoding, from the header alone."""
    rows, columns = _int(dataset, "Rows", 0, where), _int(dataset, "Columns", 0, where)
    allocated = _int(dataset, "BitsAllocated", 0, where)
    stored = _int(dataset, "BitsStored", allocated, where)
    if rows < 1 or columns < 1 or allocated not in (1, 8, 16, 32) or not 1 <= stored <= 32:
        raise ImageError(
            f"{where}: refused: unusable image header (Rows {rows}, Columns {columns}, "
            f"BitsAllocated {allocated}, BitsStored {stored})"
        )
    if rows * columns > max_pixels:
        raise ImageError(bomb_message(where, columns, rows, max_pixels))
    if rows * columns * max(allocated // 8, 1) > MAX_PIXEL_BYTES:
        raise ImageError(f"{where}: decoded pixels over the {MAX_PIXEL_BYTES} byte limit")


# JPEG frame headers (ITU-T T.81 B.1.1.3; SOF55 of JPEG-LS, T.87): every SOFn marker
# but DHT (C4), JPG (C8) and DAC (CC). They carry the height and width the decoder
# allocates for, whatever the DICOM header says.
JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}
JPEG_START, J2K_SIZ = b"\xff\xd8", b"\xff\x4f\xff\x51"
# Markers without a length field: TEM and RSTn.
JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def _check_codestream(dataset, where: str) -> None:
    """Refuse compressed pixel data whose own header does not declare the image the DICOM
    header describes, before any decoder allocates for it.

    The JPEG frame header and the JPEG 2000 SIZ marker inside the pixel data carry their
    own size, which the decoders trust: a 1 kB film whose DICOM header says 100x100 can
    declare 65000x65000 there and make the decoder ask for gigabytes. RLE is decoded into
    the header's Rows x Columns, so it needs no such check.
    """
    code = _first_fragment(dataset)
    if code is None:
        return
    found = _jpeg_frame(code) if code.startswith(JPEG_START) else _j2k_frame(code)
    if found is None:
        raise ImageError(
            f"{where}: refused: the compressed pixel data has no JPEG or JPEG 2000 frame "
            "header in its first fragment, so its size cannot be checked before decoding"
        )
    width, height, components = found
    rows, columns = _int(dataset, "Rows", 0), _int(dataset, "Columns", 0)
    samples = _int(dataset, "SamplesPerPixel", 1)
    if (width, height, components) != (columns, rows, samples):
        raise ImageError(
            f"{where}: refused: the compressed image declares {width}x{height} with "
            f"{components} component(s), the DICOM header {columns}x{rows} with {samples} "
            "(a damaged or forged film; not decoded)"
        )


def _first_fragment(dataset) -> bytes | None:
    """The first fragment of encapsulated pixel data, or None when the pixel data is
    native or RLE (whose decoder allocates by the DICOM header)."""
    from pydicom.encaps import generate_fragments, parse_basic_offsets
    from pydicom.filebase import DicomBytesIO
    from pydicom.uid import RLELossless

    meta = getattr(dataset, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None or not syntax.is_encapsulated or syntax == RLELossless:
        return None
    buffer = DicomBytesIO(bytes(dataset.PixelData))
    try:
        parse_basic_offsets(buffer)
        return next(generate_fragments(buffer), b"")
    except Exception:  # damaged item headers: pydicom raises several types
        return b""


def _jpeg_frame(code: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) of a JPEG or JPEG-LS codestream's frame header, or
    None when none comes before the first scan."""
    position = len(JPEG_START)
    while position + 4 <= len(code):
        if code[position] != 0xFF:
            return None
        marker = code[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
        elif marker in JPEG_STANDALONE:
            position += 2
        elif marker in JPEG_FRAME_MARKERS:
            if position + 10 > len(code):
                return None
            height, width = struct.unpack_from(">HH", code, position + 5)
            return width, height, code[position + 9]
        elif marker in (0xDA, 0xD9):  # a scan or the end before any frame header
            return None
        else:
            position += 2 + struct.unpack_from(">H", code, position + 2)[0]
    return None


def _j2k_frame(code: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) of a JPEG 2000 codestream's SIZ marker (T.800 A.5.1),
    bare or inside JP2 boxes, or None when there is none."""
    at = code.find(J2K_SIZ)
    if at < 0 or at + 42 > len(code):
        return None
    x_size, y_size, x_origin, y_origin = struct.unpack_from(">IIII", code, at + 8)
    (components,) = struct.unpack_from(">H", code, at + 40)
    return x_size - x_origin, y_size - y_origin, components


def _decode(pydicom, dataset, where: str) -> np.ndarray:
    meta = getattr(dataset, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is not None and syntax.is_compressed and not _can_decode(pydicom, syntax):
        raise ImageError(
            f"{where}: {syntax.name} pixel data needs a decoder plugin (pylibjpeg): {INSTALL_HINT}"
        )
    if syntax is None or not syntax.is_encapsulated:
        _check_native_length(dataset, where)
    try:
        pixels = dataset.pixel_array
    except Exception as err:  # corrupt or truncated pixel data, in any of the plugins
        raise ImageError(f"{where}: pixel data cannot be decoded ({_first_line(err)})") from None
    if pixels.ndim != 2:
        raise ImageError(f"{where}: refused: pixel data of shape {pixels.shape}, not one film")
    return pixels


def _check_native_length(dataset, where: str) -> None:
    """Refuse native pixel data longer than its image (beyond the one padding byte).

    pydicom reads such data by cutting the excess off the end as "padding", but data
    that long is another film's layout (encapsulated items under a native syntax, a
    wrong Rows or BitsAllocated): read that way the film is shifted, yet gets a
    probability.
    """
    rows, columns = _int(dataset, "Rows", 0, where), _int(dataset, "Columns", 0, where)
    allocated = _int(dataset, "BitsAllocated", 0, where)
    expected = -(-rows * columns * _int(dataset, "SamplesPerPixel", 1, where) * allocated // 8)
    length = len(dataset.PixelData)
    if length > expected + (expected % 2) + 1:
        raise ImageError(
            f"{where}: refused: the pixel data is {length} bytes, the image described by its "
            f"header needs {expected} (another layout, or a damaged film)"
        )


def _can_decode(pydicom, syntax) -> bool:
    try:
        return pydicom.pixels.get_decoder(syntax).is_available
    except NotImplementedError:  # no decoder for this transfer syntax at all
        return False


def render(dataset, pixels: np.ndarray, where: str = "DICOM") -> tuple[np.ndarray, str]:
    """Apply the rendering rule (module docstring) to decoded stored values.

    Returns:
        (film, rendering): the uint8 film and a short description of the steps taken.

    Raises:
        ImageError: a LUT or window the rule cannot apply (the reason is given).
    """
    steps = [f"DICOM {_int(dataset, 'BitsStored', 0)}-bit"]
    try:
        values, low, high = _modality(dataset, pixels, steps)
        scaled = _voi(dataset, values, low, high, steps)
    except ImageError as err:
        raise ImageError(f"{where}: refused: {err}") from None
    except Exception as err:  # a malformed LUT: pydicom raises several types
        reason = f"its LUT cannot be applied ({_first_line(err)})"
        raise ImageError(f"{where}: refused: {reason}") from None
    if str(dataset.PhotometricInterpretation).strip() == "MONOCHROME1":
        np.subtract(1.0, scaled, out=scaled)
        steps.append("MONOCHROME1 inverted")
    np.multiply(scaled, 255.0, out=scaled)
    np.round(scaled, out=scaled)
    return scaled.astype(np.uint8), ", ".join(steps)


def _modality(dataset, pixels: np.ndarray, steps: list) -> tuple[np.ndarray, float, float]:
    """Step 1: the modality values, and the range the stored values can map to."""
    low, high = _stored_range(dataset, pixels)
    if dataset.get("ModalityLUTSequence"):
        from pydicom.pixels import apply_modality_lut

        bits = int(dataset.ModalityLUTSequence[0].LUTDescriptor[2])
        steps.append("modality LUT sequence")
        # PS3.3 C.11.1.1.1: the LUT's output is unsigned, of its own bit depth.
        return apply_modality_lut(pixels, dataset), 0.0, float(2**bits - 1)
    slope = _finite(dataset, "RescaleSlope", 1.0)
    intercept = _finite(dataset, "RescaleIntercept", 0.0)
    if slope == 0:  # as dcmtk reads it: a slope of 0 would make every film blank
        steps.append("rescale slope 0 read as 1")
        slope = 1.0
    values = pixels.astype(np.float32)  # float32, not pydicom's float64: half the memory
    if (slope, intercept) != (1.0, 0.0):
        low, high = sorted((low * slope + intercept, high * slope + intercept))
        if not max(abs(low), abs(high)) < FLOAT32_LIMIT:
            raise ImageError(
                f"rescale slope {slope:g} intercept {intercept:g} takes the stored values "
                "beyond any real range"
            )
        values *= np.float32(slope)
        values += np.float32(intercept)
        steps.append(f"rescale slope {slope:g} intercept {intercept:g}")
    return values, low, high


def _finite(dataset, keyword: str, default: float) -> float:
    """A number attribute (its first value), default when absent or empty.

    Raises:
        ImageError: it is not a finite number (NaN, inf, text): a film rendered with it
            would be blank, and a blank film must not get a probability.
    """
    value = dataset.get(keyword)
    if value in (None, ""):
        return default
    number = _float(value)
    if not math.isfinite(number):
        raise ImageError(f"{keyword} {str(value)!r} is not a finite number")
    return number


def _voi(dataset, values: np.ndarray, low: float, high: float, steps: list) -> np.ndarray:
    """Step 2: the VOI LUT, else the first window, else the full range; as [0, 1] float32."""
    if dataset.get("VOILUTSequence"):
        from pydicom.pixels import apply_voi

        bits = int(dataset.VOILUTSequence[0].LUTDescriptor[2])
        if values.dtype.kind == "f":  # a rescaled value indexes the LUT as a whole number
            values = np.round(values).astype(np.int32)
        values = apply_voi(values, dataset, index=0)
        steps.append(f"VOI LUT 1 of {len(dataset.VOILUTSequence)}")
        return _unit(values, 0.0, float(max(2**bits - 1, int(values.max()), 1)))
    window = _window(dataset)
    if window is None:
        steps.append(f"full stored range {low:g}..{high:g}")
        return _unit(values, low, high)
    center, width, function, count = window
    steps.append(f"window 1 of {count} (C={center:g} W={width:g}, {function})")
    return _apply_window(values, center, width, function)


def _stored_range(dataset, pixels: np.ndarray) -> tuple[float, float]:
    """The stored values BitsStored allows, signed or not (PixelRepresentation)."""
    bits = _int(dataset, "BitsStored", pixels.dtype.itemsize * 8)
    if _int(dataset, "PixelRepresentation", 0) == 1:
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    return 0.0, float(2**bits - 1)


def _window(dataset):
    """(center, width, VOI LUT function, how many windows) of the first window, or None."""
    if "WindowCenter" not in dataset or "WindowWidth" not in dataset:
        return None
    centers, widths = _values(dataset["WindowCenter"]), _values(dataset["WindowWidth"])
    if not centers or not widths:
        return None
    function = str(dataset.get("VOILUTFunction", "") or "LINEAR").strip().upper()
    center, width = float(centers[0]), float(widths[0])
    if not math.isfinite(center):
        raise ImageError(f"window center {centers[0]!r} is not a finite number")
    return center, width, function, min(len(centers), len(widths))


def _values(element) -> list:
    """The values of a DICOM element, as a list whatever its multiplicity."""
    if element.VM == 0:
        return []
    return list(element.value) if element.VM > 1 else [element.value]


def _apply_window(values: np.ndarray, center: float, width: float, function: str):
    """PS3.3 C.11.2.1.2 and C.11.2.1.3, scaled to [0, 1] in float32, in place."""
    if function not in VOI_FUNCTIONS:
        raise ImageError(f"unknown VOI LUT Function {function!r}")
    if not (width >= 1 if function == "LINEAR" else width > 0):
        raise ImageError(f"window width {width:g} is too small for {function}")
    values = values.astype(np.float32, copy=False)
    if function == "SIGMOID":
        values -= np.float32(center)
        values *= np.float32(-4.0 / width)
        with np.errstate(over="ignore"):  # far below the window: exp overflows to inf, y 0
            np.exp(values, out=values)
        values += 1.0
        return np.reciprocal(values, out=values)
    if function == "LINEAR":
        center, width = center - 0.5, width - 1.0
    return _unit(values, center - width / 2.0, center + width / 2.0)


def _unit(values, low: float, high: float) -> np.ndarray:
    """values mapped linearly from [low, high] to [0, 1] and clipped, as float32."""
    values = values.astype(np.float32, copy=True) if values.dtype != np.float32 else values
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    values -= np.float32(low)
    values *= np.float32(1.0 / (high - low))
    return np.clip(values, 0.0, 1.0, out=values)
