"""The learning loop's job in the daemon's scheduler."""

from __future__ import annotations

from pathlib import Path

from connector.daemon import Daemon
from connector.learning.jobs import JOB_ID
from tests.support.learning import learning_config


def test_daemon_schedules_the_learning_loop_only_when_enabled(tmp_path: Path) -> None:
    enabled = Daemon(learning_config(tmp_path, export_cron="*/5 * * * *"))
    enabled._load_providers()
    assert JOB_ID in enabled.scheduler.job_ids()
    job = enabled.scheduler.scheduler.get_job(JOB_ID)
    assert "*/5" in str(job.trigger)

    config = learning_config(tmp_path)
    config.learning.enabled = False
    disabled = Daemon(config)
    disabled._load_providers()
    assert JOB_ID not in disabled.scheduler.job_ids()


def test_invalid_cron_is_a_config_error(tmp_path: Path) -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="cron"):
        learning_config(tmp_path, export_cron="every night")
