"""The Docker-free image build's pure parts: the Debian mirror read from apt sources, the
input hash that decides what to rebuild, and how mlmodel_operator.nodeimages reads the
build script's answer and failures. No buildah, no network: each test runs in well under
a second (the scripts are run with --mirror, --keys and --list, which build nothing)."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from shipping_helpers import REPO

from mlmodel_operator import nodeimages
from mlmodel_operator.nodeimages import (
    ImageArchive,
    ImageBuildError,
    failed_step,
    parse_archive_lines,
)

SHORTS = ["mlmodel-operator", "mlmodel-serving", "minio", "pause"]
# everything the two scripts hash, relative to the repository
INPUTS = [
    "hack/buildah-images.sh",
    "hack/debian-base.sh",
    "hack/versions.env",
    "hack/go/pause",
    "operator/Dockerfile",
    "operator/requirements.txt",
    "operator/mlmodel_operator",
    "serving/Dockerfile",
    "serving/requirements.txt",
    "serving/mlmodel_serving",
    "pyproject.toml",
    "README.md",
]


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


# ---- the Debian mirror, from this machine's apt sources -----------------------------------


def mirror(tmp_path: Path, files: dict[str, str], **env: str) -> subprocess.CompletedProcess[str]:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (apt / name).write_text(textwrap.dedent(text))
    env = {"MLMODEL_APT_DIR": str(apt), "MLMODEL_DEBIAN_MIRROR": "", **env}
    return run([str(REPO / "hack" / "debian-base.sh"), "--mirror"], env)


def test_mirror_is_the_deb822_entry_that_lists_bookworm(tmp_path: Path) -> None:
    result = mirror(
        tmp_path,
        {
            "sources.list.d/debian.sources": """\
                Types: deb
                URIs: http://security.example/debian-security
                Suites: bookworm-security
                Components: main

                # the main archive
                Types: deb deb-src
                URIs: http://mirror.example/debian/ http://other.example/debian
                Suites: bookworm bookworm-updates
                Components: main
                Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
                """
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "http://mirror.example/debian\n"


def test_mirror_skips_disabled_and_source_only_stanzas_and_reads_continuation_lines(
    tmp_path: Path,
) -> None:
    result = mirror(
        tmp_path,
        {
            "sources.list.d/a.sources": """\
                Types: deb
                URIs: http://disabled.example/debian
                Suites: bookworm
                Enabled: no

                Types: deb-src
                URIs: http://src.example/debian
                Suites: bookworm
                """,
            "sources.list.d/b.sources": """\
                types: deb
                uris: http://mirror.example/debian
                suites: bookworm-updates
                 bookworm
                components: main
                """,
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "http://mirror.example/debian\n"


def test_mirror_from_a_one_line_sources_list_with_options(tmp_path: Path) -> None:
    result = mirror(
        tmp_path,
        {
            "sources.list": """\
                # deb http://commented.example/debian bookworm main
                deb-src http://src.example/debian bookworm main
                deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://mirror.example/debian/ bookworm main
                """,
            "sources.list.d/later.sources": """\
                Types: deb
                URIs: http://later.example/debian
                Suites: bookworm
                """,
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "http://mirror.example/debian\n"  # sources.list is read first


def test_mirror_of_another_debian_release_is_used_for_bookworm(tmp_path: Path) -> None:
    result = mirror(
        tmp_path,
        {
            "sources.list.d/debian.sources": """\
                Types: deb
                URIs: http://ports.example/ubuntu
                Suites: noble

                Types: deb
                URIs: http://mirror.example/debian/
                Suites: trixie
                """
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "http://mirror.example/debian\n"


def test_no_debian_mirror_is_an_error_that_names_the_override(tmp_path: Path) -> None:
    files = {"sources.list": "deb http://archive.example/ubuntu noble main\n"}
    result = mirror(tmp_path, files)
    assert result.returncode != 0
    assert "MLMODEL_DEBIAN_MIRROR" in result.stderr
    assert result.stdout == ""
    overridden = mirror(tmp_path / "again", files, MLMODEL_DEBIAN_MIRROR="http://m.example/d/")
    assert overridden.returncode == 0, overridden.stderr
    assert overridden.stdout == "http://m.example/d\n"


# ---- the input hash -----------------------------------------------------------------------


def copy_inputs(dest: Path) -> Path:
    for rel in INPUTS:
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def keys(root: Path, **env: str) -> dict[str, str]:
    result = run([str(root / "hack" / "buildah-images.sh"), "--keys"], env)
    assert result.returncode == 0, result.stderr
    pairs = [line.split() for line in result.stdout.splitlines()]
    assert [p[0] for p in pairs] == SHORTS
    return {short: key for short, key in pairs}


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {short for short in before if before[short] != after[short]}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_inputs(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="module")
def repo_keys() -> dict[str, str]:
    return keys(REPO)


def test_keys_depend_on_content_not_on_the_checkout_location(
    tree: Path, repo_keys: dict[str, str]
) -> None:
    assert keys(tree) == repo_keys
    assert all(len(k) == 64 for k in repo_keys.values())


@pytest.mark.parametrize(
    ("path", "affected"),
    [
        ("serving/mlmodel_serving/cli.py", {"mlmodel-serving", "mlmodel-operator"}),
        ("serving/requirements.txt", {"mlmodel-serving"}),
        ("serving/Dockerfile", {"mlmodel-serving"}),
        ("operator/mlmodel_operator/cli.py", {"mlmodel-operator"}),
        ("operator/requirements.txt", {"mlmodel-operator"}),
        ("pyproject.toml", {"mlmodel-operator"}),
        ("README.md", {"mlmodel-operator"}),
        ("hack/go/pause/main.go", {"pause"}),
        ("hack/debian-base.sh", {"mlmodel-serving", "mlmodel-operator"}),
        ("hack/buildah-images.sh", set(SHORTS)),
    ],
)
def test_a_changed_input_changes_the_keys_of_exactly_the_images_built_from_it(
    tmp_path: Path, repo_keys: dict[str, str], path: str, affected: set[str]
) -> None:
    root = copy_inputs(tmp_path)
    with (root / path).open("a") as fh:
        fh.write("\n# changed\n")
    assert changed(repo_keys, keys(root)) == affected


def test_a_new_source_file_counts_and_byte_code_does_not(
    tmp_path: Path, repo_keys: dict[str, str]
) -> None:
    root = copy_inputs(tmp_path)
    cache = root / "operator" / "mlmodel_operator" / "__pycache__"
    cache.mkdir()
    (cache / "cli.cpython-311.pyc").write_bytes(b"\0")
    (root / "serving" / "mlmodel_serving" / "stray.pyc").write_bytes(b"\0")
    assert keys(root) == repo_keys
    (root / "operator" / "mlmodel_operator" / "new_module.py").write_text("")
    assert changed(repo_keys, keys(root)) == {"mlmodel-operator"}


def test_names_follow_image_registry_tag_and_the_minio_version(
    tmp_path: Path, repo_keys: dict[str, str]
) -> None:
    root = copy_inputs(tmp_path)
    env = {"IMAGE_REGISTRY": "registry.example/ml", "IMAGE_TAG": "9.9.9"}
    assert changed(repo_keys, keys(root, **env)) == {"mlmodel-operator", "mlmodel-serving"}
    versions = root / "hack" / "versions.env"
    versions.write_text(versions.read_text().replace("MINIO_VERSION=", "MINIO_VERSION=x"))
    assert changed(repo_keys, keys(root)) == {"minio"}

    cache = tmp_path / "cache"
    result = run(
        [str(root / "hack" / "buildah-images.sh"), "--list"], {**env, "MLMODEL_CACHE": str(cache)}
    )
    assert result.returncode == 0, result.stderr
    archives = parse_archive_lines(result.stdout)
    minio_version = next(
        line.split("=", 1)[1]
        for line in versions.read_text().splitlines()
        if line.startswith("MINIO_VERSION=")
    )
    assert archives == {
        "mlmodel-operator": ImageArchive(
            "mlmodel-operator",
            "registry.example/ml/mlmodel-operator:9.9.9",
            cache / "images" / "archives" / "mlmodel-operator.tar",
        ),
        "mlmodel-serving": ImageArchive(
            "mlmodel-serving",
            "registry.example/ml/mlmodel-serving:9.9.9",
            cache / "images" / "archives" / "mlmodel-serving.tar",
        ),
        "minio": ImageArchive(
            "minio",
            f"localhost/mlmodel/minio:{minio_version}",
            cache / "images" / "archives" / "minio.tar",
        ),
        "pause": ImageArchive(
            "pause", "localhost/mlmodel/pause:1.0", cache / "images" / "archives" / "pause.tar"
        ),
    }


def test_default_names_are_the_ones_the_manifests_use(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("IMAGE_REGISTRY", raising=False)
    monkeypatch.delenv("IMAGE_TAG", raising=False)
    monkeypatch.setenv("MLMODEL_CACHE", str(tmp_path))
    archives = nodeimages.image_archives()
    assert archives["mlmodel-operator"].name == "ghcr.io/mlmodel-lifecycle/mlmodel-operator:0.1.0"
    assert archives["mlmodel-serving"].name == "ghcr.io/mlmodel-lifecycle/mlmodel-serving:0.1.0"
    assert archives["pause"].path == tmp_path / "images" / "archives" / "pause.tar"


def test_unknown_image_is_refused() -> None:
    result = run([str(REPO / "hack" / "buildah-images.sh"), "--list", "nginx"])
    assert result.returncode == 2
    assert "unknown image 'nginx'" in result.stderr


def test_archives_whose_stamp_matches_are_not_rebuilt_and_buildah_is_not_started(
    tmp_path: Path,
) -> None:
    root = copy_inputs(tmp_path / "repo")
    cache = tmp_path / "cache"
    archives = cache / "images" / "archives"
    archives.mkdir(parents=True)
    for short, key in keys(root).items():
        (archives / f"{short}.tar").write_bytes(b"tar")
        (archives / f"{short}.stamp").write_text(key + "\n")
    fake = tmp_path / "bin"
    fake.mkdir()
    marker = tmp_path / "buildah-was-run"
    (fake / "buildah").write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    (fake / "buildah").chmod(0o755)
    env = {"MLMODEL_CACHE": str(cache), "PATH": f"{fake}:{os.environ['PATH']}"}
    started = time.monotonic()
    result = run([str(root / "hack" / "buildah-images.sh")], env)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10
    assert "up to date" in result.stderr
    assert set(parse_archive_lines(result.stdout)) == set(SHORTS)
    assert not marker.exists()


# ---- how nodeimages runs the script and reads its answer --------------------------------


def test_parse_archive_lines_ignores_anything_else() -> None:
    text = "noise\narchive\tpause\tlocalhost/mlmodel/pause:1.0\t/c/pause.tar\narchive\tbad\n"
    assert parse_archive_lines(text) == {
        "pause": ImageArchive("pause", "localhost/mlmodel/pause:1.0", Path("/c/pause.tar"))
    }


def test_failed_step_is_the_last_one_the_log_names() -> None:
    log = (
        "[images 10:00:00] build-pause: done in 1s\n"
        "[images 10:00:09] FAILED step build-mlmodel-serving after 8s (exit 1); "
        "log: /c/images/logs/build-mlmodel-serving.log\n"
        "  | ERROR: No matching distribution found for numpy==9\n"
    )
    assert failed_step(log) == (
        "build-mlmodel-serving",
        Path("/c/images/logs/build-mlmodel-serving.log"),
    )
    assert failed_step("buildah: command not found\n") == ("buildah-images.sh", None)


def fake_script(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake-images.sh"
    script.write_text("set -euo pipefail\n" + textwrap.dedent(body))
    return script


def test_a_failing_step_raises_with_its_name_log_and_tail(tmp_path: Path) -> None:
    script = fake_script(
        tmp_path,
        """\
        echo '[images 10:00:00] build-mlmodel-serving ...' >&2
        echo '[images 10:00:09] FAILED step build-mlmodel-serving after 8s (exit 1); log: /l/s.log' >&2
        echo '  | ERROR: No matching distribution found for numpy==9' >&2
        exit 1
        """,
    )
    with pytest.raises(ImageBuildError) as err:
        nodeimages.run_script(script=script, timeout=30)
    assert err.value.step == "build-mlmodel-serving"
    assert err.value.log == Path("/l/s.log")
    assert "No matching distribution found for numpy==9" in str(err.value)
    assert "build-mlmodel-serving" in str(err.value)


def test_a_build_over_its_time_limit_is_killed_with_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = fake_script(
        tmp_path,
        f"""\
        echo '[images 10:00:00] build-mlmodel-operator ...' >&2
        sleep 60 & echo $! >{pidfile}
        wait
        """,
    )
    started = time.monotonic()
    with pytest.raises(ImageBuildError) as err:
        nodeimages.run_script(script=script, timeout=1)
    assert time.monotonic() - started < 10
    assert err.value.step == "build-mlmodel-operator"
    assert "not done after 1s" in str(err.value)
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists(), "the script's child outlived the time-out"


def test_success_without_the_archives_is_an_error(tmp_path: Path) -> None:
    script = fake_script(
        tmp_path, f"printf 'archive\\tpause\\tlocalhost/mlmodel/pause:1.0\\t{tmp_path}/no.tar\\n'\n"
    )
    with pytest.raises(ImageBuildError, match=r"made no \['pause'\]"):
        nodeimages.build_image_archives(shorts=["pause"], script=script)
    (tmp_path / "no.tar").write_bytes(b"tar")
    got = nodeimages.build_image_archives(shorts=["pause"], script=script)
    assert got["pause"].path == tmp_path / "no.tar"
