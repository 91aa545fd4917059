"""kgstack.validation.locate: every synth problem names the environment file, then the field or the object."""

from __future__ import annotations

from kgstack.validation import locate

SOURCES = {"prod": "environments/prod.yaml"}


def test_a_field_of_the_environment_file_is_reported_at_that_field() -> None:
    assert locate(["prod/Quota: quota.pods: is 10 but 12 are needed"], SOURCES) == [
        "environments/prod.yaml: quota.pods: is 10 but 12 are needed"
    ]


def test_a_rendered_object_keeps_its_file_before_the_field() -> None:
    problem = "prod/cronjob-kga-prod-backup-redis.yaml: spec.jobTemplate.spec.template.spec.volumes[0].secret: gone"
    assert locate([problem], SOURCES) == [f"environments/prod.yaml: {problem}"]


def test_a_construct_path_is_kept_and_an_unknown_chart_passes_through() -> None:
    assert locate(["prod/Stack/Redis: Redis needs a PVC", "other: as is"], SOURCES) == [
        "environments/prod.yaml: prod/Stack/Redis: Redis needs a PVC",
        "other: as is",
    ]
