"""settings.Settings.from_env: defaults, each variable, and errors that name it."""

from __future__ import annotations

import dataclasses

import pytest

from mlmodel_operator.settings import Settings, SettingsError


def test_empty_environment_gives_the_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings(
        serving_image="ghcr.io/mlmodel-lifecycle/mlmodel-serving:0.1.0",
        image_pull_policy="IfNotPresent",
        s3_endpoint="minio.mlmodel-system.svc:9000",
        s3_secure=False,
        s3_credentials_secret="mlmodel-s3-credentials",
        s3_access_key_key="accessKey",
        s3_secret_key_key="secretKey",
        archive_bucket="model-archive",
        namespaces=(),
        finalizer="ml.lifecycle.io/archive",
        cluster_domain="cluster.local",
        serving_port=8080,
        reconcile_interval_seconds=300.0,
        workers=32,
        fleet_updates_per_second=10.0,
    )
    assert settings.all_namespaces
    assert Settings() == settings


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "MLMODEL_SERVING_IMAGE": "registry.local:5000/team/serving:dev@sha256:" + "a" * 64,
            "MLMODEL_IMAGE_PULL_POLICY": "Never",
            "MLMODEL_S3_ENDPOINT": "127.0.0.1:9000",
            "MLMODEL_S3_SECURE": "true",
            "MLMODEL_S3_SECRET_NAME": "s3-creds",
            "MLMODEL_ARCHIVE_BUCKET": "archive.team-a",
            "MLMODEL_NAMESPACES": " team-a, team-b ,team-a,",
            "MLMODEL_CLUSTER_DOMAIN": "k8s.example",
            "MLMODEL_RECONCILE_INTERVAL": "2.5",
            "MLMODEL_WORKERS": "64",
            "MLMODEL_FLEET_UPDATES_PER_SECOND": "0.5",
            "UNRELATED": "ignored",
        }
    )
    assert settings.serving_image == "registry.local:5000/team/serving:dev@sha256:" + "a" * 64
    assert settings.image_pull_policy == "Never"
    assert settings.s3_endpoint == "127.0.0.1:9000"
    assert settings.s3_secure is True
    assert settings.s3_credentials_secret == "s3-creds"
    assert settings.archive_bucket == "archive.team-a"
    assert settings.namespaces == ("team-a", "team-b")
    assert not settings.all_namespaces
    assert settings.cluster_domain == "k8s.example"
    assert settings.reconcile_interval_seconds == 2.5
    assert settings.workers == 64
    assert settings.fleet_updates_per_second == 0.5


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().s3_secure = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("TRUE", True),
        ("yes", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
        ("", False),
        (" true ", True),
    ],
)
def test_s3_secure_values(raw: str, expected: bool) -> None:
    assert Settings.from_env({"MLMODEL_S3_SECURE": raw}).s3_secure is expected


@pytest.mark.parametrize("endpoint", ["minio:9000", "minio", "[::1]:9000", "s3.amazonaws.com"])
def test_accepted_endpoints(endpoint: str) -> None:
    assert Settings.from_env({"MLMODEL_S3_ENDPOINT": endpoint}).s3_endpoint == endpoint


def test_blank_values_take_the_defaults() -> None:
    settings = Settings.from_env({"MLMODEL_ARCHIVE_BUCKET": "  ", "MLMODEL_SERVING_IMAGE": ""})
    assert settings.archive_bucket == "model-archive"
    assert settings.serving_image == Settings().serving_image


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("MLMODEL_SERVING_IMAGE", "Not An Image", "container image reference"),
        ("MLMODEL_IMAGE_PULL_POLICY", "Sometimes", "Always, IfNotPresent, Never"),
        ("MLMODEL_S3_ENDPOINT", "http://minio:9000", "without a scheme"),
        ("MLMODEL_S3_ENDPOINT", "minio:99999", "host[:port]"),
        ("MLMODEL_S3_ENDPOINT", "minio/path", "host[:port]"),
        ("MLMODEL_S3_SECURE", "maybe", "true or false"),
        ("MLMODEL_S3_SECRET_NAME", "Bad_Name", "a Secret name"),
        ("MLMODEL_ARCHIVE_BUCKET", "ab", "S3 bucket name"),
        ("MLMODEL_ARCHIVE_BUCKET", "a..b", "S3 bucket name"),
        ("MLMODEL_NAMESPACES", "team-a,Team_B", "'Team_B' is not one"),
        ("MLMODEL_CLUSTER_DOMAIN", "-bad", "DNS domain"),
        ("MLMODEL_RECONCILE_INTERVAL", "soon", "0.1 to 86400"),
        ("MLMODEL_RECONCILE_INTERVAL", "0", "0.1 to 86400"),
        ("MLMODEL_RECONCILE_INTERVAL", "nan", "0.1 to 86400"),
        ("MLMODEL_RECONCILE_INTERVAL", "1e9", "0.1 to 86400"),
        ("MLMODEL_WORKERS", "0", "a whole number from 1 to 256"),
        ("MLMODEL_WORKERS", "2.5", "a whole number from 1 to 256"),
        ("MLMODEL_FLEET_UPDATES_PER_SECOND", "-1", "a number from 0 to 10000"),
        ("MLMODEL_FLEET_UPDATES_PER_SECOND", "fast", "a number from 0 to 10000"),
    ],
)
def test_errors_name_the_variable_value_and_accepted(
    variable: str, value: str, accepted: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.variable == variable
    assert str(error).startswith(f"{variable}=")
    assert repr(error.value) in str(error)
    assert accepted in str(error)


DEFAULT = "ghcr.io/mlmodel-lifecycle/mlmodel-serving:0.1.0"
DIGEST = "@sha256:" + "b" * 64


def test_by_default_only_the_default_images_repository_may_serve() -> None:
    settings = Settings.from_env({})
    assert settings.image_sources == ("ghcr.io/mlmodel-lifecycle/mlmodel-serving",)
    assert settings.image_problem(DEFAULT) is None
    assert (
        settings.image_problem("ghcr.io/mlmodel-lifecycle/mlmodel-serving:0.2.0" + DIGEST) is None
    )
    problem = settings.image_problem("evil.example/steal:1")
    assert problem is not None
    assert "spec.serving.image 'evil.example/steal:1' is not allowed" in problem
    assert (
        "MLMODEL_ALLOWED_IMAGES" in problem
        and "ghcr.io/mlmodel-lifecycle/mlmodel-serving" in problem
    )
    # a repository is matched whole, never as a prefix of another one
    assert settings.image_problem("ghcr.io/mlmodel-lifecycle/mlmodel-serving-evil:1") is not None
    assert settings.image_problem("ghcr.io/mlmodel-lifecycle/mlmodel-serving/sub:1") is not None


def test_allowed_images_take_repositories_prefixes_and_any() -> None:
    settings = Settings.from_env(
        {"MLMODEL_ALLOWED_IMAGES": f" {DEFAULT.split(':')[0]}, registry.example:5000/ml/ ,"}
    )
    assert settings.allowed_images == (DEFAULT.split(":")[0], "registry.example:5000/ml/")
    assert settings.image_problem("registry.example:5000/ml/team-a/churn:3") is None
    assert settings.image_problem("registry.example:5000/ml-other/churn:3") is not None
    assert settings.image_problem("registry.example/ml/churn:3") is not None  # another port
    anything = Settings.from_env({"MLMODEL_ALLOWED_IMAGES": "*"})
    assert anything.image_problem("evil.example/steal:1") is None


def test_digest_pinned_images_only() -> None:
    pinned = "ghcr.io/mlmodel-lifecycle/mlmodel-serving" + DIGEST
    settings = Settings.from_env(
        {"MLMODEL_SERVING_IMAGE": pinned, "MLMODEL_REQUIRE_IMAGE_DIGEST": "true"}
    )
    assert settings.image_problem(pinned) is None
    problem = settings.image_problem(DEFAULT)
    assert problem is not None and "not pinned by digest" in problem
    assert "MLMODEL_REQUIRE_IMAGE_DIGEST" in problem


@pytest.mark.parametrize(
    ("env", "variable", "accepted"),
    [
        ({"MLMODEL_ALLOWED_IMAGES": "registry.example/ml:1"}, "MLMODEL_ALLOWED_IMAGES",
         "no tags or digests in the list"),
        ({"MLMODEL_ALLOWED_IMAGES": "Registry.Example/"}, "MLMODEL_ALLOWED_IMAGES",
         "prefixes ending in '/'"),
        ({"MLMODEL_ALLOWED_IMAGES": "registry.example/ml/"}, "MLMODEL_ALLOWED_IMAGES",
         f"allows the default serving image {DEFAULT} too"),
        ({"MLMODEL_REQUIRE_IMAGE_DIGEST": "yes"}, "MLMODEL_SERVING_IMAGE",
         "pinned by digest"),
        ({"MLMODEL_REQUIRE_IMAGE_DIGEST": "maybe"}, "MLMODEL_REQUIRE_IMAGE_DIGEST",
         "true or false"),
    ],
)  # fmt: skip
def test_image_policy_errors_name_the_variable(
    env: dict[str, str], variable: str, accepted: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable and accepted in caught.value.accepted
