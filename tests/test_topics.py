"""``jobpulse topics create`` and :func:`jobpulse.topics.ensure_topics` on the real Kafka."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
from conftest import one_error_line

from jobpulse import topics
from jobpulse.settings import Settings

if TYPE_CHECKING:
    from conftest import CliRunner

pytestmark = pytest.mark.integration


def _fresh_topics(settings: Settings) -> Settings:
    """``settings`` with topic names nobody has created yet."""
    tag = f"t-{uuid.uuid4().hex[:8]}"
    return settings.with_overrides(
        offers_topic=f"{tag}.offers", deltas_topic=f"{tag}.deltas", dlq_topic=f"{tag}.dlq"
    )


def test_fixture_topics_have_default_partitions(settings: Settings) -> None:
    names = topics.project_topics(settings)
    assert topics.topic_partitions(settings, names) == dict.fromkeys(names, 12)


@pytest.mark.partitions(3)
def test_partitions_marker_sets_the_count(settings: Settings) -> None:
    names = topics.project_topics(settings)
    assert settings.partitions == 3
    assert topics.topic_partitions(settings, names) == dict.fromkeys(names, 3)


def test_ensure_topics_is_idempotent(settings: Settings) -> None:
    again = topics.ensure_topics(settings)
    assert again == dict.fromkeys(topics.project_topics(settings), topics.EXISTS)


def test_cli_creates_topics_with_configured_partitions(settings: Settings, cli: CliRunner) -> None:
    fresh = _fresh_topics(settings).with_overrides(partitions=4)
    names = topics.project_topics(fresh)
    try:
        first = cli(fresh, "topics", "create")
        assert first.returncode == 0, first.stderr
        assert all(f"{name}" in first.stdout for name in names)
        assert first.stdout.count("created") == 3
        assert topics.topic_partitions(fresh, names) == dict.fromkeys(names, 4)

        second = cli(fresh, "topics", "create")
        assert second.returncode == 0, second.stderr
        assert second.stdout.count("exists") == 3 and "created" not in second.stdout
    finally:
        topics.delete_topics(fresh, names)


def test_partition_mismatch_is_reported(settings: Settings, cli: CliRunner) -> None:
    other = settings.with_overrides(partitions=5)
    with pytest.raises(topics.TopicMismatch, match="partition count mismatch"):
        topics.ensure_topics(other)

    result = cli(other, "topics", "create")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{settings.deltas_topic} has 12" in result.stderr
    assert "JOBPULSE_PARTITIONS is 5" in result.stderr
    # An offers topic with more partitions than the setting was grown: not a mismatch.
    assert settings.offers_topic not in one_error_line(result)
    # The existing topics were left as they were.
    names = topics.project_topics(settings)
    assert topics.topic_partitions(settings, names) == dict.fromkeys(names, 12)


def test_mismatch_still_creates_the_missing_topics(settings: Settings) -> None:
    partial = settings.with_overrides(partitions=2, dlq_topic=f"{settings.dlq_topic}-new")
    with pytest.raises(topics.TopicMismatch):
        topics.ensure_topics(partial)
    assert topics.topic_partitions(partial, [partial.dlq_topic]) == {partial.dlq_topic: 2}
    topics.delete_topics(partial, [partial.dlq_topic])


def test_delete_topics_removes_only_existing(settings: Settings) -> None:
    extra = f"{settings.offers_topic}-extra"
    topics.ensure_topics(settings, [extra], partitions=1)
    assert topics.delete_topics(settings, [extra, f"{extra}-never-created"]) == [extra]
    assert topics.topic_partitions(settings, [extra]) == {}


def test_unreachable_kafka_is_one_clear_message(stack: Settings, cli: CliRunner) -> None:
    nowhere = stack.with_overrides(kafka_bootstrap="localhost:1")
    result = cli(nowhere, "topics", "create")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "Kafka at localhost:1 is not reachable" in result.stderr
    assert "jobpulse stack up" in result.stderr


@pytest.mark.partitions(3)
def test_grow_adds_offers_partitions_and_refuses_to_shrink(
    settings: Settings, cli: CliRunner
) -> None:
    grown = cli(settings, "topics", "grow", "--partitions", "5")
    assert grown.returncode == 0, grown.stderr
    assert f"{settings.offers_topic} grown from 3 to 5 partitions" in grown.stdout
    names = topics.project_topics(settings)
    assert topics.topic_partitions(settings, names) == {
        settings.offers_topic: 5,
        settings.deltas_topic: 3,
        settings.dlq_topic: 3,
    }
    again = cli(settings, "topics", "grow", "--partitions", "5")
    assert again.returncode == 0 and "already has 5 partitions" in again.stdout
    shrink = cli(settings, "topics", "grow", "--partitions", "4")
    assert shrink.returncode == 1
    assert "cannot shrink" in one_error_line(shrink) and "from 5 to 4" in shrink.stderr
    # `topics create` accepts the grown offers topic and shows its real count.
    created = cli(settings, "topics", "create")
    assert created.returncode == 0, created.stderr
    assert any(
        line.split()[0] == settings.offers_topic and "5 partitions" in line
        for line in created.stdout.splitlines()
    )


def test_grow_a_missing_topic_is_one_clear_error(settings: Settings, cli: CliRunner) -> None:
    missing = settings.with_overrides(offers_topic=f"{settings.offers_topic}-missing")
    result = cli(missing, "topics", "grow", "--partitions", "20")
    assert result.returncode == 1
    assert "does not exist" in one_error_line(result)
