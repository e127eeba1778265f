"""The node's settings: how it listens, whom it accepts, where it keeps its state.

Each `NodeConfig` field that is a command-line option says so (`options.option`): the
device's `infer.py serve` and the host's `edgexray serve` build their options from it, so
a flag, its default and its help are written once.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InferenceError
from ..interpreter import check_threads
from ..options import option

MEGABYTE = 1024 * 1024
AE_TITLE_PATTERN = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # no backslash or control


def check_ae_title(title: str, what: str) -> None:
    if not AE_TITLE_PATTERN.fullmatch(title) or not title.strip():
        raise InferenceError(
            f"{what} {title!r} must be 1 to 16 printable characters without a backslash"
        )


@dataclass(frozen=True)
class Destination:
    """A DICOM node to send results to: AE title, host and port."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """AE@host:port, e.g. PACS@10.0.0.5:104."""
        match = re.fullmatch(r"([^@]+)@(.+):([0-9]{1,5})", text.strip())
        if not match:
            raise InferenceError(f"destination {text!r} is not AE@host:port")
        ae_title, host, port = match.group(1), match.group(2).strip("[]"), int(match.group(3))
        check_ae_title(ae_title, "destination AE title")
        if not 1 <= port <= 65535:
            raise InferenceError(f"destination port {port} is not between 1 and 65535")
        return cls(ae_title, host, port)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class NodeConfig:
    """How the node listens, whom it accepts, and where it keeps its state (each field's
    help says what it is)."""

    model: Path = option(None, "model file, its sidecar MODEL.json next to it")
    state: Path = option(
        None, "folder for incoming/ classified/ outbox/ results.jsonl", required=True
    )
    allowed_aes: tuple[str, ...] = option(
        (),
        "a calling AE title to accept (repeat for each modality)",
        "--allow-ae",
        metavar="AE_TITLE",
        repeat=True,
        required=True,
    )
    ae_title: str = option("EDGEXRAY", "this node's AE title")
    host: str = option("0.0.0.0", "address to listen on")
    port: int = option(11112, "port to listen on (0: any free port)")
    allowed_networks: tuple[str, ...] = option(
        (),
        "a source address or network to accept (default: any)",
        "--allow-address",
        metavar="IP_OR_CIDR",
        repeat=True,
    )
    max_associations: int = option(4, "associations at once; more are rejected (try later)")
    max_object_mb: float = option(64.0, "largest object accepted; larger ones get a failure status")
    association_timeout: float = option(900.0, "seconds one association may last")
    idle_timeout: float = option(60.0, "seconds without data before an association is aborted")
    tls_cert: Path | None = option(None, "serve DICOM over TLS with this certificate (PEM)")
    tls_key: Path | None = option(None, "the certificate's private key (PEM)")
    tls_ca: Path | None = option(None, "require client certificates signed by this CA (PEM)")
    pacs: Destination | None = option(
        None,
        "send each film's result there: a Structured Report (TID 1500)",
        metavar="AE@HOST:PORT",
        parse=Destination.parse,
    )
    explain: bool = option(
        False,
        "also send each answered film's heatmap to --pacs: a Secondary Capture in its own "
        "series of the film's study (about 26 model runs a film)",
    )
    retry_initial: float = option(
        5.0, "seconds before the first retry to reach the PACS (doubling)"
    )
    retry_max: float = option(300.0, "longest wait between retries to reach the PACS")
    keep_days: float | None = option(
        None, "delete kept films, their pages and records after this many days (default: keep)"
    )
    keep_mb: float | None = option(
        None, "delete the oldest kept films (and their pages and records) beyond this many MB"
    )
    threads: int | None = option(None, "interpreter threads (default: the runtime's choice)")
    reports: bool = option(False, "also write each film's HTML report in STATE/reports")
    networks: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.model is None:
            raise InferenceError(
                "give --model MODEL.tflite (with its sidecar MODEL.json next to it)"
            )
        if not self.allowed_aes:
            raise InferenceError("give at least one --allow-ae: the calling AE title of a modality")
        for title in (self.ae_title, *self.allowed_aes):
            check_ae_title(title, "AE title")
        if not 0 <= self.port <= 65535:
            raise InferenceError(f"port {self.port} is not between 0 and 65535")
        limits = {
            "--max-associations": self.max_associations,
            "--max-object-mb": self.max_object_mb,
            "--association-timeout": self.association_timeout,
            "--idle-timeout": self.idle_timeout,
            "--retry-initial": self.retry_initial,
            "--retry-max": self.retry_max,
        }
        for flag, value in (("--keep-days", self.keep_days), ("--keep-mb", self.keep_mb)):
            if value is not None:
                limits[flag] = value
        # inf passes "> 0" and then breaks timers and sizes: limits are finite numbers.
        bad = [flag for flag, value in limits.items() if not (math.isfinite(value) and value > 0)]
        if bad:
            raise InferenceError(f"{', '.join(bad)}: must be a positive finite number")
        if self.retry_initial > self.retry_max:
            raise InferenceError(
                f"--retry-initial {self.retry_initial:g} is longer than --retry-max "
                f"{self.retry_max:g}: the first wait must not exceed the longest"
            )
        if self.explain and self.pacs is None:
            raise InferenceError("--explain sends heatmaps to the PACS: give --pacs too")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InferenceError("TLS needs both --tls-cert and --tls-key")
        if self.tls_ca is not None and self.tls_cert is None:
            raise InferenceError("--tls-ca needs --tls-cert and --tls-key")
        check_threads(self.threads)
        try:
            networks = tuple(ipaddress.ip_network(n, strict=False) for n in self.allowed_networks)
        except ValueError as err:
            raise InferenceError(f"--allow-address: {err}") from None
        object.__setattr__(self, "networks", networks)

    @property
    def max_object_bytes(self) -> int:
        return int(self.max_object_mb * MEGABYTE)
