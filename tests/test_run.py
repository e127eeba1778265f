"""The stage table of `edgexray run`: hashes, derived outputs, the order of stages."""

from __future__ import annotations

import hashlib
import json

from edgexray import __version__, artifacts
from edgexray.pipeline.train import TrainConfig
from edgexray.run import STAGES, RunConfig, stage_hashes


def _hashes_before_calibrate_was_a_stage(config: RunConfig) -> dict[str, str]:
    """The chain as runs recorded it when bundle also calibrated."""
    hashes, chain = {}, __version__
    for stage, settings in config.stage_settings().items():
        if stage == "calibrate":
            continue
        text = chain + stage + json.dumps(settings, sort_keys=True, default=list)
        chain = hashes[stage] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return hashes


def test_stage_hashes_of_earlier_runs_are_kept(tmp_path):
    for calibrate_on in (None, str(tmp_path / "site")):
        config = RunConfig(train=TrainConfig(data=str(tmp_path)), calibrate_on=calibrate_on)
        hashes = stage_hashes(config)
        assert hashes.pop("calibrate")
        assert hashes == _hashes_before_calibrate_was_a_stage(config)


def test_calibrating_elsewhere_changes_the_calibrate_and_bundle_hashes_only(tmp_path):
    train = TrainConfig(data=str(tmp_path))
    one = stage_hashes(RunConfig(train=train, calibrate_on="/site/a"))
    other = stage_hashes(RunConfig(train=train, calibrate_on="/site/b"))
    assert [stage for stage in one if one[stage] != other[stage]] == ["calibrate", "bundle"]


def test_retraining_removes_every_later_stages_outputs_and_keeps_the_model():
    later = {name.split("/")[0] for stage in STAGES[1:] for name in stage.outputs}
    assert set(artifacts.DERIVED) == later | {artifacts.RUN_REPORT}
    assert not set(artifacts.DERIVED) & set(STAGES[0].outputs)


def test_calibration_runs_before_bundling_and_after_the_gate():
    names = [stage.name for stage in STAGES]
    assert names.index("verify") < names.index("calibrate") < names.index("bundle")
    assert [stage.name for stage in STAGES if stage.distributed] == ["train", "prune", "quantize"]
