"""Results for sharing: each record without identifying data, before any other output.

The `Deidentify` sink goes first in a batch's list: it rewrites each film's record in
place, so the records, heatmap file names and HTML report after it never see the
identity. What happens to each identifying field is readers.identity.IDENTITY's last
column: patient and accession numbers and the UIDs become a keyed hash (HMAC-SHA256 with
the site's key, cut to HASH_CHARS hex digits: the same patient gets the same hash in every
shared file, and only the key's holder can tell who it is), names, birth dates, study
dates and descriptions are dropped, the age is kept in whole years (90 or more above
that). The film's path becomes film-HASH plus its suffix, and any text of the record that
quoted a removed value (an error naming the file) has it replaced.

The films' pixels are not changed: a report of films with text burned into the image
(BurnedInAnnotation YES) leaves those pictures out.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from ..errors import InferenceError
from ..readers.identity import DROP, HASH, IDENTITY, KEEP, YEARS, shared_age

# 16 hex digits (64 bits): no two of a clinic's patients share one by chance.
HASH_CHARS = 16
MIN_KEY_BYTES = 16
KEY_HINT = "make one with: head -c 32 /dev/urandom > site.key; chmod 600 site.key"
REMOVED = "[removed]"
# Values shorter than this are not searched for in other fields' text (a sex "F" or an
# ID "1" would blank unrelated words).
SHORTEST_SCRUBBED = 4


def load_key(path: str | Path) -> bytes:
    """The de-identification key in a file: its bytes, without surrounding white space.

    Raises:
        InferenceError: the file cannot be read or holds fewer than MIN_KEY_BYTES bytes.
    """
    try:
        key = Path(path).read_bytes().strip()
    except OSError as err:
        raise InferenceError(f"de-identification key {path}: {err.strerror or err}") from None
    if len(key) < MIN_KEY_BYTES:
        raise InferenceError(
            f"de-identification key {path} holds {len(key)} bytes, fewer than "
            f"{MIN_KEY_BYTES}: {KEY_HINT}"
        )
    return key


def keyed_hash(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:HASH_CHARS]


def deidentified(record: dict, key: bytes) -> dict:
    """A copy of record fit for sharing (module docstring), in the same field order."""
    actions = {attribute.field: attribute.shared for attribute in IDENTITY}
    path = Path(str(record["path"]))
    removed = {str(path), path.name}
    shared = {}
    for field, value in record.items():
        action = actions.get(field, KEEP)
        if field == "path":
            shared[field] = f"film-{keyed_hash(key, str(path))}{path.suffix.lower()}"
        elif action == HASH:
            shared[field] = keyed_hash(key, str(value))
            removed.add(str(value))
        elif action == DROP:
            removed.add(str(value))
        elif action == YEARS:
            shared[field] = shared_age(record)
        else:
            shared[field] = value
    if "patient_age" not in record and "patient_birth_date" in record:
        shared["patient_age"] = shared_age(record)
    own = {"path", *actions}  # written here: never searched for removed text
    return {
        field: value if field in own else _scrubbed(value, removed)
        for field, value in shared.items()
        if value is not None
    }


def _scrubbed(value, removed: set[str]):
    if not isinstance(value, str):
        return value
    for text in sorted(removed, key=len, reverse=True):
        if len(text) >= SHORTEST_SCRUBBED and text in value:
            value = value.replace(text, REMOVED)
    return value


class Deidentify:
    """The sink that makes every later output shareable: it rewrites each record in place."""

    needs_map = False

    def __init__(self, key: bytes):
        self.key = key

    def add(self, film, explanation=None) -> None:
        shared = deidentified(film.record, self.key)
        film.record.clear()
        film.record.update(shared)
        # Later sinks see no tag of the film but whether text is burned into its pixels.
        burned = (film.info.get("tags") or {}).get("BurnedInAnnotation")
        film.info = {**film.info, "tags": {"BurnedInAnnotation": burned}, "deidentified": True}

    def close(self) -> None:
        pass
