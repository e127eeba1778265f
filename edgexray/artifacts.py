"""Where a run keeps its artifacts, and how they are written without ever half-writing one.

A run directory holds:
  config.json        the frozen TrainConfig
  manifest.csv       the patient-grouped split every stage reuses
  model.keras        the float baseline (never modified after training)
  metrics.json       training metrics on val and test, shift stress test
  pruned.keras       the pruned, stripped model (edgexray prune)
  prune.json         pruning config, measured sparsity, val metrics
  tflite/NAME.tflite and tflite/NAME.json   exported variants (each carries its sidecar
                     inside, edge_runtime/metadata.py) and their sidecars' readable copies
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

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from edgexray.edge_runtime import metadata
from edgexray.edge_runtime.errors import InferenceError
from edgexray.edge_runtime.sidecar import copy_path
from edgexray.edge_runtime.sidecar import sha256_of as sha256  # noqa: F401 re-export
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
# Everything the stages after training make from model.keras, and the report on it: stale
# once the model is retrained (tests/test_run.py holds run.STAGES to this list).
DERIVED = (
    PRUNED,
    PRUNE_REPORT,
    QUANTIZE_REPORT,
    TFLITE_DIR,
    VERIFY_REPORT,
    BENCHMARK_DIR,
    CALIBRATION_REPORT,
    CALIBRATED_DIR,
    SELECTED,
    BUNDLES_DIR,
    RUN_REPORT,
)
LOCK = ".edgexray.lock"  # held while a command writes the run (see `locked`)


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


def write_model(path: Path, model: bytes, sidecar: dict) -> Path:
    """Write a model file carrying `sidecar` inside, then its readable copy X.json, each
    atomically. The model's flatbuffer keeps every byte (only its associated files are
    written anew), so its identity, the sidecar's sha256, must already be the model's.

    Raises:
        EdgexrayError: the sidecar's sha256 is not the model's.
    """
    path = Path(path)
    try:
        data = metadata.with_sidecar(model, sidecar, str(path))
    except InferenceError as err:
        raise EdgexrayError(str(err)) from None
    atomic_write(path, lambda temporary: temporary.write_bytes(data))
    text = metadata.sidecar_text(sidecar)
    atomic_write(copy_path(path), lambda temporary: temporary.write_text(text))
    return path


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


# A bundle folder names its own files: bundle.json marks it, SHA256SUMS lists them.
BUNDLE_MANIFEST = "bundle.json"
BUNDLE_CHECKSUMS = "SHA256SUMS"
# What an emptied bundle folder that still holds the user's files says in its bundle.json.
WITHDRAWN = "withdrawn: its model was replaced; edgexray removed its own files and kept yours"


def is_run(folder: Path) -> bool:
    """True when folder holds an edgexray run (what `train` writes first, or a stage record)."""
    folder = Path(folder)
    return (folder / MANIFEST).is_file() or (folder / STAGE_RECORD).is_file()


def require_run_folder(folder: Path) -> None:
    """Refuse to train into a folder that holds something and is not an edgexray run.

    Training writes config.json, manifest.csv and model.keras there and then removes what
    later stages made from an earlier model: in someone else's folder, that is their files.

    Raises:
        EdgexrayError: folder is a file, or a non-empty folder that is not a run.
    """
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise EdgexrayError(f"{folder} exists and is not a folder: choose another --out")
    if not is_run(folder) and any(p.name != LOCK for p in folder.iterdir()):
        raise EdgexrayError(
            f"{folder} is not empty and is not an edgexray run (no {MANIFEST}): "
            "choose another --out"
        )


def bundle_files(bundle: Path) -> set[str] | None:
    """The files (relative, posix) a bundle folder lists as its own, with its SHA256SUMS and
    bundle.json; None when the folder is not a bundle or its list cannot be read."""
    bundle = Path(bundle)
    if not (bundle / BUNDLE_MANIFEST).is_file():
        return None
    try:
        lines = (bundle / BUNDLE_CHECKSUMS).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    return {line.split("  ", 1)[-1] for line in lines if line} | {
        BUNDLE_CHECKSUMS,
        BUNDLE_MANIFEST,
    }


def _bundle_of(path: Path, run_dir: Path) -> Path | None:
    """The bundle folder (below run_dir) that path lies in, if any."""
    for parent in path.parents:
        if parent == run_dir or run_dir not in parent.parents:
            return None
        if (parent / BUNDLE_MANIFEST).is_file():
            return parent
    return None


def written_files(folder: Path) -> list[Path]:
    """The files under folder that edgexray wrote: all of them, except in a bundle folder,
    where only what its SHA256SUMS lists (the user's results.jsonl and .venv are theirs)."""
    found = []
    for root, folders, files in os.walk(folder):
        root = Path(root)
        listed = bundle_files(root) if BUNDLE_MANIFEST in files else None
        if listed is not None:
            folders[:] = []
            found += [root / name for name in sorted(listed) if (root / name).is_file()]
            continue
        folders.sort()
        found += [root / name for name in sorted(files)]
    return found


def _own_models(folder: Path) -> list[Path]:
    """Models in folder that carry the sidecar edgexray writes for them (inside, or for older
    models beside them), and those sidecars' readable copies."""
    found = []
    for model in sorted(Path(folder).glob("*.tflite")):
        beside = _is_sidecar_of(model, inside=False)
        if beside or _is_sidecar_of(model, inside=True):
            found.append(model)
        if beside:
            found.append(copy_path(model))
    return found


def _is_sidecar_of(model: Path, inside: bool) -> bool:
    from edgexray.edge_runtime.sidecar import SIDECAR_SCHEMA

    try:
        text = metadata.read(model).sidecar_bytes if inside else copy_path(model).read_bytes()
        sidecar = json.loads(text or b"null")
    except (OSError, InferenceError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return (
        isinstance(sidecar, dict)
        and sidecar.get("schema") == SIDECAR_SCHEMA
        and sidecar.get("model_file") == model.name
    )


def _own_benchmark(folder: Path) -> list[Path]:
    """benchmark.json, benchmark.md and the plots benchmark.json lists."""
    try:
        plots = json.loads((Path(folder) / "benchmark.json").read_text()).get("plots", [])
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, RecursionError):
        return []
    names = ["benchmark.json", "benchmark.md"] + [p for p in plots if isinstance(p, str)]
    return [Path(folder) / Path(name).name for name in names]


def owned_files(run_dir: Path, names) -> list[Path]:
    """The files under the given names (of DERIVED) that edgexray can tell it
    wrote, without a stage record: its fixed file names, models with its sidecars,
    benchmark outputs, bundle files listed in SHA256SUMS and the bundles' zips."""
    run_dir = Path(run_dir)
    found = []
    for name in names:
        path = run_dir / name
        if path.is_file():
            found.append(path)
        elif name in (TFLITE_DIR, CALIBRATED_DIR):
            found += _own_models(path)
        elif name == BENCHMARK_DIR:
            found += _own_benchmark(path)
        elif name == BUNDLES_DIR and path.is_dir():
            for bundle in sorted(p for p in path.iterdir() if p.is_dir()):
                if bundle_files(bundle) is not None:
                    found += written_files(bundle)
                    found.append(bundle.with_name(bundle.name + ".zip"))
    return [p for p in found if p.is_file()]


def recorded_outputs(run_dir: Path) -> list[str]:
    """The files (relative paths) that stages.json says edgexray wrote."""
    try:
        record = read_json(Path(run_dir) / STAGE_RECORD)
    except EdgexrayError:
        return []
    return [
        relative
        for entry in record.values()
        if isinstance(entry, dict) and isinstance(entry.get("outputs"), dict)
        for relative in entry["outputs"]
    ]


def remove_outputs(run_dir: Path, recorded=(), names=None) -> list[str]:
    """Delete what edgexray wrote under the given names (default: the stage table's
    DERIVED, what later stages make from model.keras), and nothing else.

    Removed: the files `recorded` (paths relative to run_dir, as stages.json holds them)
    that lie under those names, and the files `owned_files` recognizes. Inside a bundle
    folder only what its SHA256SUMS lists counts, whatever a record says. Folders left
    empty go too; a bundle folder still holding the user's files (results.jsonl, .venv)
    keeps them, marked withdrawn, so the next `bundle` there recognizes it.

    Returns:
        The removed paths, relative to run_dir.
    """
    names = DERIVED if names is None else names
    run_dir = Path(run_dir)
    targets = {p.resolve() for p in owned_files(run_dir, names)}
    for relative in recorded:
        path = run_dir / relative
        if Path(relative).parts[:1] and Path(relative).parts[0] in names and path.is_file():
            bundle = _bundle_of(path, run_dir)
            listed = bundle_files(bundle) if bundle else None
            if bundle is None or (
                listed is not None and path.relative_to(bundle).as_posix() in listed
            ):
                targets.add(path.resolve())
    home = run_dir.resolve()
    # Never through a link to somewhere else: what lies outside the run folder is not ours.
    targets = {path for path in targets if home in path.parents}
    bundles = {_bundle_of(path, home) for path in targets} - {None}
    removed = []
    for path in sorted(targets):
        path.unlink(missing_ok=True)
        removed.append(path.relative_to(home).as_posix())
    for bundle in bundles:
        _remove_empty_folders(bundle)
        if bundle.is_dir() and any(bundle.iterdir()):
            write_json(bundle / BUNDLE_MANIFEST, {"withdrawn": WITHDRAWN})
            atomic_write(bundle / BUNDLE_CHECKSUMS, lambda temporary: temporary.write_text(""))
    for name in names:
        _remove_empty_folders(run_dir / name)
    return removed


def _remove_empty_folders(top: Path) -> None:
    """Remove the folders under top (and top) left empty, deepest first; never a link."""
    if not top.is_dir() or top.is_symlink():
        return
    for folder in sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True):
        if not folder.is_symlink() and not any(folder.iterdir()):
            folder.rmdir()
    if not any(top.iterdir()):
        top.rmdir()


def remove_derived(run_dir: Path) -> list[str]:
    """Delete what later stages made from an earlier model.keras (`remove_outputs` of what
    stages.json recorded and what edgexray can tell it wrote); return the paths removed."""
    return remove_outputs(run_dir, recorded_outputs(run_dir))


_HELD: dict[str, list] = {}  # lock file -> [descriptor, depth]: re-entrant in one process


@contextlib.contextmanager
def locked(run_dir: Path):
    """Hold the run folder's lock file while a command writes the run.

    A second process asking for it is refused at once (two runs writing one folder would
    verify each other's models); the same process may ask again (run calls train). The
    lock is flock(2) on run_dir/.edgexray.lock, released by the kernel if the process dies.

    Raises:
        EdgexrayError: another process holds the lock.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        path = str((run_dir / LOCK).resolve())
        if path in _HELD:
            _HELD[path][1] += 1
            descriptor = None
        else:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise naming(err, run_dir) from None
    if descriptor is not None:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(descriptor)
            raise EdgexrayError(
                f"{run_dir} is in use by another edgexray command (it holds the lock "
                f"{LOCK}): wait for it to finish"
            ) from None
        _HELD[path] = [descriptor, 1]
    try:
        yield
    finally:
        _HELD[path][1] -= 1
        if not _HELD[path][1]:
            descriptor = _HELD.pop(path)[0]
            fcntl.flock(descriptor, fcntl.LOCK_UN)
            os.close(descriptor)


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
