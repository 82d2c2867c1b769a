"""DeploymentSettings: one typed place for a deployment's serving settings, from flag to instance."""

from __future__ import annotations

import pytest

from chattune.endpoints.config import deployment_settings, parse_probe_option
from chattune.entities import MAX_CHOICES, Deployment, DeploymentSettings, ProvisioningState
from chattune.errors import UserError


def test_defaults_are_azures() -> None:
    s = DeploymentSettings()
    assert (s.instance_count, s.request_timeout_ms, s.max_concurrent_requests_per_instance) == (1, 5000, 1)
    assert s.liveness_probe.period == 10 and s.readiness_probe.failure_threshold == 30


def test_engine_batch_follows_concurrency_unless_set() -> None:
    assert DeploymentSettings(max_concurrent_requests_per_instance=4).engine_batch_size == 4 * MAX_CHOICES
    assert DeploymentSettings(max_concurrent_requests_per_instance=4, max_batch_size=3).engine_batch_size == 3


def test_a_deployment_record_gives_back_its_settings() -> None:
    given = deployment_settings(
        {
            "request_timeout_ms": 60000,
            "max_concurrent_requests_per_instance": 16,
            "liveness_probe": parse_probe_option("--liveness-probe", "period=2,failure_threshold=3"),
            "max_new_tokens_cap": 64,
            "instance_count": None,  # not given: the default
        }
    )
    dep = Deployment("ep", "blue", "m", "1", ProvisioningState.CREATING, 0.0, **given.columns())
    assert dep.settings == given
    assert dep.settings.liveness_probe.failure_threshold == 3 and dep.settings.liveness_probe.timeout == 2
    # recorded before the engine settings existed: the defaults apply
    old = Deployment("ep", "old", "m", "1", ProvisioningState.SUCCEEDED, 0.0)
    assert old.settings == DeploymentSettings()


@pytest.mark.parametrize(
    ("given", "flag"),
    [
        ({"request_timeout_ms": 180_001}, "--request-timeout-ms"),
        ({"request_timeout_ms": 0}, "--request-timeout-ms"),
        ({"max_concurrent_requests_per_instance": 0}, "--max-concurrent-requests-per-instance"),
        ({"instance_count": 0}, "--instances"),
        ({"liveness_probe": {"period": 0}}, "--liveness-probe.period"),
    ],
)
def test_an_out_of_bounds_setting_names_its_flag(given: dict[str, object], flag: str) -> None:
    with pytest.raises(UserError) as caught:
        deployment_settings(given)
    assert caught.value.message.startswith(f"{flag}: ")


def test_a_probe_option_names_the_field() -> None:
    with pytest.raises(UserError, match=r"--readiness-probe: perod: Extra inputs"):
        parse_probe_option("--readiness-probe", "perod=2")
    with pytest.raises(UserError, match="is not KEY=VALUE"):
        parse_probe_option("--readiness-probe", "period")


def test_autoscaling_bounds_are_checked_and_named_by_their_flags() -> None:
    s = deployment_settings({"instance_count": 3, "autoscale": {"min_instances": 1, "max_instances": 2}})
    assert s.autoscale is not None and s.max_instance_count == 2 and s.autoscale.target_requests_per_instance == 2.0
    dep = Deployment("ep", "blue", "m", "1", ProvisioningState.CREATING, 0.0, **s.columns())
    assert dep.settings == s and dep.autoscale == {
        "min_instances": 1,
        "max_instances": 2,
        "target_requests_per_instance": 2.0,
    }
    with pytest.raises(UserError, match=r"min_instances \(3\) is above max_instances \(2\)"):
        deployment_settings({"autoscale": {"min_instances": 3, "max_instances": 2}})
    with pytest.raises(UserError, match=r"^--max-instances: Input should be greater than or equal to 1"):
        deployment_settings({"autoscale": {"max_instances": 0}})
    with pytest.raises(UserError, match=r"^--target-requests-per-instance: Input should be greater than 0"):
        deployment_settings({"autoscale": {"max_instances": 2, "target_requests_per_instance": 0}})


def test_ray_serve_options_follow_the_deployment_settings() -> None:
    from chattune.serving.ray_serve import app_name, route_prefix, serve_options

    fixed = serve_options(
        deployment_settings(
            {
                "instance_count": 2,
                "max_concurrent_requests_per_instance": 4,
                "liveness_probe": parse_probe_option("--liveness-probe", "period=3,timeout=1"),
            }
        )
    )
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 1.0}
    assert (fixed["max_ongoing_requests"], fixed["health_check_period_s"], fixed["health_check_timeout_s"]) == (4, 3, 1)
    scaled = serve_options(
        deployment_settings(
            {
                "instance_count": 5,
                "autoscale": {"min_instances": 1, "max_instances": 3, "target_requests_per_instance": 1.5},
            }
        )
    )
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 3,
        "initial_replicas": 3,  # instance_count within the bounds
        "target_ongoing_requests": 1.5,
    }
    assert (app_name("ep", "blue"), route_prefix("ep", "blue")) == ("chattune.ep.blue", "/ep/blue")
