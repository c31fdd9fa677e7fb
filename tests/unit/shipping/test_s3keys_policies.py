"""s3keys' pure parts: the policy documents, the Secrets, what is kept, the bad input."""

from __future__ import annotations

import pytest

from mlmodel_operator import s3keys
from mlmodel_operator.s3keys import Buckets, S3Key
from mlmodel_operator.settings import DEFAULT_S3_SECRET_NAME

BUCKETS = Buckets(("models", "team-models"), "model-archive")


def statements(policy: dict[str, object]) -> dict[str, tuple[list[str], list[str]]]:
    assert policy["Version"] == "2012-10-17"
    out = {}
    for st in policy["Statement"]:  # type: ignore[attr-defined]
        assert st["Effect"] == "Allow" and "Condition" not in st
        out[st["Sid"]] = (st["Action"], st["Resource"])
    return out


def test_the_namespace_policy_reads_its_prefix_and_writes_its_decisions_only() -> None:
    assert statements(s3keys.build_namespace_policy("team-a", BUCKETS)) == {
        "LocateBuckets": (
            ["s3:GetBucketLocation"],
            [
                "arn:aws:s3:::model-archive",
                "arn:aws:s3:::models",
                "arn:aws:s3:::team-models",
            ],
        ),
        "ReadOwnModels": (
            ["s3:GetObject"],
            ["arn:aws:s3:::models/team-a/*", "arn:aws:s3:::team-models/team-a/*"],
        ),
        "DecisionLogBucket": (
            ["s3:GetBucketObjectLockConfiguration", "s3:HeadBucket"],
            ["arn:aws:s3:::model-archive"],
        ),
        "WriteOwnDecisions": (
            ["s3:PutObject", "s3:PutObjectRetention"],
            ["arn:aws:s3:::model-archive/decisions/team-a/*"],
        ),
    }


def test_the_namespace_policy_follows_the_decisions_prefix() -> None:
    policy = s3keys.build_namespace_policy("b", Buckets(decisions_prefix="audit/records"))
    assert statements(policy)["WriteOwnDecisions"][1] == [
        "arn:aws:s3:::model-archive/audit/records/b/*"
    ]


def test_no_namespace_policy_lists_deletes_or_reaches_another_prefix() -> None:
    for ns in ("a", "team-a", "x" * 63):
        for actions, resources in statements(s3keys.build_namespace_policy(ns, BUCKETS)).values():
            assert not {"s3:ListBucket", "s3:DeleteObject", "s3:*"} & set(actions)
            for arn in resources:
                assert arn.count("*") <= 1
                if arn.endswith("*"):
                    assert arn.endswith(f"/{ns}/*")


def test_the_operator_policy_reads_models_and_keeps_the_archive() -> None:
    assert statements(s3keys.build_operator_policy(BUCKETS)) == {
        "LocateBuckets": (
            ["s3:GetBucketLocation"],
            [
                "arn:aws:s3:::model-archive",
                "arn:aws:s3:::models",
                "arn:aws:s3:::team-models",
            ],
        ),
        "ReadModels": (
            ["s3:GetObject"],
            ["arn:aws:s3:::models/*", "arn:aws:s3:::team-models/*"],
        ),
        "ArchiveBucket": (
            [
                "s3:CreateBucket",
                "s3:GetBucketObjectLockConfiguration",
                "s3:HeadBucket",
                "s3:ListBucket",
            ],
            ["arn:aws:s3:::model-archive"],
        ),
        "ArchiveObjects": (
            [
                "s3:DeleteObject",
                "s3:GetObject",
                "s3:GetObjectRetention",
                "s3:PutObject",
                "s3:PutObjectRetention",
            ],
            ["arn:aws:s3:::model-archive/*"],
        ),
    }


def test_users_secrets_and_names() -> None:
    assert s3keys.namespace_user("team-a") == "mlmodel-ns-team-a"
    assert s3keys.NAMESPACE_SECRET == DEFAULT_S3_SECRET_NAME  # what the operator mounts
    key = S3Key("mlmodel-ns-team-a", s3keys.new_secret_key())
    assert len(key.secret_key) == 40 and key.secret_key not in repr(key)
    assert s3keys.new_secret_key() != s3keys.new_secret_key()
    secret = s3keys.build_secret("team-a", "mlmodel-s3-credentials", key)
    assert secret["metadata"] == {
        "name": "mlmodel-s3-credentials",
        "namespace": "team-a",
        "labels": {
            "app.kubernetes.io/part-of": "mlmodel-lifecycle",
            "app.kubernetes.io/managed-by": "mlmodel-s3keys",
        },
    }
    assert secret["stringData"] == {"accessKey": key.access_key, "secretKey": key.secret_key}


@pytest.mark.parametrize(
    ("data", "kept"),
    [
        (None, False),
        ({}, False),
        ({"accessKey": "mlmodel-laptop", "secretKey": "root-secret-123"}, False),  # root's
        ({"accessKey": "mlmodel-ns-a", "secretKey": "short"}, False),
        ({"accessKey": "mlmodel-ns-a", "secretKey": "k" * 41}, False),
        ({"accessKey": "mlmodel-ns-a", "secretKey": "k" * 40}, True),
    ],
)
def test_a_secret_is_kept_only_when_it_holds_the_users_key(
    data: dict[str, str] | None, kept: bool
) -> None:
    key = s3keys.key_to_keep(data, "mlmodel-ns-a")
    assert (key is not None) == kept


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: s3keys.namespace_user("Team_A"), ["namespace 'Team_A'", "Kubernetes namespace"]),
        (lambda: s3keys.namespace_user("a" * 64), ["namespace", "at most 63"]),
        (lambda: Buckets(("Models",)), ["models bucket 'Models'", "S3 bucket name"]),
        (lambda: Buckets(archive="a"), ["archive bucket 'a'", "3-63"]),
        (lambda: Buckets(()), ["models buckets", "at least one"]),
        (lambda: Buckets(decisions_prefix="/d/"), ["decisions prefix '/d/'", "leading"]),
    ],
)
def test_bad_input_names_the_field_the_value_and_what_is_accepted(
    make: object, words: list[str]
) -> None:
    with pytest.raises(ValueError) as info:
        make()  # type: ignore[operator]
    for word in words:
        assert word in str(info.value)


def test_the_command_refuses_without_the_root_key_or_with_a_bad_namespace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        s3keys.main(["--operator"], env={})
    assert "MLMODEL_S3_ROOT_ACCESS_KEY and MLMODEL_S3_ROOT_SECRET_KEY" in capsys.readouterr().err
    root = {"MLMODEL_S3_ROOT_ACCESS_KEY": "root", "MLMODEL_S3_ROOT_SECRET_KEY": "root-secret"}
    with pytest.raises(SystemExit):
        s3keys.main(["--namespace", "Bad_NS"], env=root)
    err = capsys.readouterr().err
    assert "invalid namespace 'Bad_NS'" in err and "root-secret" not in err
    with pytest.raises(SystemExit):
        s3keys.main([], env=root)
    assert "--operator and/or --namespace" in capsys.readouterr().err
