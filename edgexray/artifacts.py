"""Where a run keeps its artifacts, and how they are written without ever half-writing one.

A run directory holds:
  config.json        the frozen TrainConfig
  manifest.csv       the patient-grouped split every stage reuses
  model.keras        the float baseline (never modified after training)
  metrics.json       training metrics on val and test, shift stress test
  pruned.keras       the pruned, stripped model (edgexray prune)
  prune.json         pruning config, measured sparsity, val metrics
  tflite/NAME.tflite and tflite/NAME.json   exported variants and their sidecars
  quantize.json      every variant's sizes, sparsity, threshold and val metrics
  verify.json        the recall gate's report
  benchmark/         benchmark.json, benchmark.md and plots
  selected.json      the variant edgexray run chose for devices
  calibrated/        the selected model calibrated on a site sample (edgexray run --calibrate-on)
  calibration.json   that calibration, and the model before/after on the held-out test films
  bundles/           the rpi and android bundles
  report.md          everything above, for people
  stages.json        the settings hash of each finished edgexray run stage

Which stage writes which of them is edgexray.run.STAGES.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from edgexray.edge_runtime.infer import sha256_of as sha256  # noqa: F401 (re-export)
from edgexray.errors import EdgexrayError

CONFIG = "config.json"
MANIFEST = "manifest.csv"
MODEL = "model.keras"
METRICS = "metrics.json"
PRUNED = "pruned.keras"
TFLITE_DIR = "tflite"
PRUNE_REPORT = "prune.json"
QUANTIZE_REPORT = "quantize.json"
VERIFY_REPORT = "verify.json"
BENCHMARK_DIR = "benchmark"
SELECTED = "selected.json"
CALIBRATED_DIR = "calibrated"
CALIBRATION_REPORT = "calibration.json"
BUNDLES_DIR = "bundles"
RUN_REPORT = "report.md"
STAGE_RECORD = "stages.json"


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call write(temporary_path), then rename it over path, so path is whole or untouched."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent
        )
    except OSError as err:
        raise naming(err, path) from None
    os.close(handle)
    try:
        write(Path(temporary))
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException as err:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise naming(err, path) from None
        raise
    return path


def naming(err: OSError, path: Path) -> OSError:
    """The same error about path: users gave path, not our hidden temporary file."""
    if err.errno is None:
        return err
    return OSError(err.errno, err.strerror, str(path))  # OSError picks the subclass


def write_json(path: Path, data) -> Path:
    """Write strict JSON atomically (undefined metrics must be None, not NaN)."""
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    return atomic_write(path, lambda temporary: temporary.write_text(text))


def read_json(path: Path) -> dict:
    """Read a JSON object, or raise EdgexrayError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgexrayError(f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EdgexrayError(f"{path} is not valid JSON ({err})") from None
    except RecursionError:  # json recurses once per level of nesting
        raise EdgexrayError(f"{path} is nested too deeply to be an edgexray file") from None
    if not isinstance(data, dict):
        raise EdgexrayError(f"{path} does not hold a JSON object")
    return data


def require_writable(folder: Path) -> None:
    """Fail early, creating nothing, when files cannot be written into `folder`.

    Checks the nearest folder that already exists, where `folder` would be created, with a
    temporary file: permission bits do not tell (root ignores them, sysfs refuses root).

    Raises:
        EdgexrayError: folder (or a parent) is a file, or the place cannot be written.
    """
    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise EdgexrayError(f"cannot write into {folder}: {existing} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise EdgexrayError(f"cannot write into {folder}: {err.strerror or err}") from None


def save_keras(model, path: Path) -> Path:
    """Save a tf_keras model in the .keras format, atomically."""
    return atomic_write(path, lambda temporary: model.save(temporary))


def load_keras(path: Path):
    """Load a .keras model with safe_mode (no arbitrary code from the file).

    Raises:
        EdgexrayError: missing or unreadable model.
    """
    from edgexray.compat import keras

    path = Path(path)
    if not path.is_file():
        raise EdgexrayError(f"Keras model not found: {path}")
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # Keras raises many types for a damaged file
        raise EdgexrayError(f"cannot load Keras model {path}: {err}") from None


def remove_derived(run_dir: Path) -> list[str]:
    """Delete what later stages made from an earlier model.keras; return the names removed.

    What those are is read from the stage table (edgexray.run.DERIVED).
    """
    from edgexray.run import DERIVED

    removed = []
    for name in DERIVED:
        path = Path(run_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


def require_run(run_dir: Path) -> Path:
    """Check run_dir holds a trained model; return it as a Path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EdgexrayError(f"run directory not found: {run_dir}")
    for name in (CONFIG, MANIFEST, MODEL):
        if not (run_dir / name).is_file():
            raise EdgexrayError(
                f"{run_dir} holds no trained model ({name} missing); run `edgexray train` first"
            )
    return run_dir
