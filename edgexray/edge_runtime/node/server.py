"""The device as a DICOM node: a Storage SCP that classifies each film as it arrives.

The X-ray unit (or a PACS) is configured with this box as a destination (AE title, host,
port) and pushes films by C-STORE. The node is three parts and a folder:

    network.py  the Storage SCP: associations checked and bounded, films stored durably
    worker.py   one thread: classify each stored film, hand it to the sinks, record it
    outbox.py   with --pacs: each film's Structured Report (sr.py) and, with --explain,
                its heatmap (heatmap.py), built and sent to the PACS by threads of their own
    spool.py    the state folder: the durable queue (incoming/), results.jsonl, ...
    retention.py  with --keep-days / --keep-mb: old films, pages and records deleted

incoming/ is the durable queue: a film stored but not yet classified when the node stops
(or is killed) is classified at the next start, and the SOP Instance UID names the file,
so a film sent twice is stored and classified once. Every stored film gets exactly one
line in results.jsonl.

pynetdicom and pydicom are imported lazily: `pip install "edgexray[node]"` on a host, the
optional requirements line in a bundle.
"""

from __future__ import annotations

import logging
import signal
import threading

from ..classifier import Classifier
from ..errors import EXIT_OK, InferenceError
from .config import NodeConfig
from .network import StorageService
from .pages import ReportPages
from .retention import Retention, prune
from .spool import OUTBOX, REPORTS, NodeState
from .worker import Worker

log = logging.getLogger("edgexray.node")

NODE_EXTRA = 'pip install "edgexray[node]" (on a device: the node line of requirements.txt)'


def require_node_libraries() -> None:
    """Import pynetdicom and pydicom, or raise a one-line InferenceError naming the extra."""
    try:
        import pydicom  # noqa: F401
        import pynetdicom  # noqa: F401
    except ImportError as err:
        raise InferenceError(f"the DICOM node needs {err.name}: {NODE_EXTRA}") from None


class Node:
    """A running Storage SCP with its classification worker (and SR sender).

    `start()` recovers the queue, loads the model and listens; `stop()` stops listening,
    lets the worker finish the film in hand, and leaves the rest in incoming/.
    """

    def __init__(self, config: NodeConfig):
        require_node_libraries()
        self.config = config
        self.state = NodeState(config.state)
        self.classifier = Classifier(config.model, config.threads)
        self.outbox = None
        sinks: list = []
        if config.reports:
            sinks.append(
                ReportPages(self.state.folder / REPORTS, self.classifier.sidecar, config.model)
            )
        if config.pacs is not None:
            from .outbox import Outbox, Settings

            folders = (self.state.incoming, self.state.classified, self.state.quarantine)
            settings = Settings(
                folder=self.state.folder / OUTBOX,
                films=folders,
                destination=config.pacs,
                calling_ae=config.ae_title,
                model=config.model,
                threads=config.threads,
                retry_initial=config.retry_initial,
                retry_max=config.retry_max,
            )
            self.outbox = Outbox.for_node(settings, config.explain)
            sinks.append(self.outbox)
        self.retention = Retention(config.keep_days, config.keep_mb)
        housekeeping = self.prune if self.retention.active else None
        self.worker = Worker(self.state, self.classifier, sinks, housekeeping)
        self.service = StorageService(config, self.state, self.worker.put)

    @property
    def address(self) -> tuple[str, int] | None:
        return self.service.address

    def start(self) -> Node:
        for name in self.state.recover():
            self.worker.put(name)
        if self.worker.waiting():
            log.info(
                "%d film(s) stored before the last stop: classifying them", self.worker.waiting()
            )
        self.worker.start()
        if self.outbox is not None:
            self.outbox.start()
        self.service.start()
        log.info(
            "DICOM node %s listening on %s:%d%s; accepting %s",
            self.config.ae_title,
            *self.address,
            " (TLS)" if self.config.tls_cert else "",
            ", ".join(self.config.allowed_aes),
        )
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.service.stop()
        self.worker.stop(timeout)
        if self.outbox is not None:
            self.outbox.stop(timeout)
        self.state.results.close()

    def prune(self, now: float | None = None) -> dict:
        """Delete kept films, pages and records past the retention (retention.py)."""
        waiting = self.outbox.films_waiting() if self.outbox is not None else set()
        return prune(self.state, self.retention, waiting, now)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every stored film is classified (for tests and benchmarks)."""
        return self.worker.wait_idle(timeout)


def serve(config: NodeConfig) -> int:
    """Run the node until SIGTERM or Ctrl-C; return the exit code."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    node = Node(config)
    try:
        node.start()
    except OSError as err:  # the port is taken, or below 1024 without the right
        node.stop()
        raise InferenceError(
            f"cannot listen on {config.host}:{config.port} ({err.strerror or err})"
        ) from None
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        log.info("stopping: films not yet classified stay in %s", node.state.incoming)
        node.stop()
        signal.signal(signal.SIGTERM, previous)
    return EXIT_OK
