"""The config file: parsing and refusals with their lines, which file is in force,
flags > environment > file > default for every value (through the real CLI), a
repository opened by name with its passphrase file, secrets files others can read
refused, ``stasis config show``, and ``serve`` over two named repositories."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stasis.app.config import Config, check_config_text, check_private, load_config
from stasis.catalog import Catalog, JobStore
from stasis.errors import ConfigFileError, HypervisorError, PolicyError, UsageError
from stasis.hypervisor import libvirt_api as lv
from stasis.repository import Repository
from stasis.service.policy import parse_policies
from stasis.service.runner import Service
from stasis.settings import find_config
from tests.clocks import ManualClock
from tests.conftest import PASSPHRASE, Cli, init_repo, mixed_image, seed_catalog

EXAMPLE = """\
catalog = "/var/lib/stasis/catalog.db"
libvirt = "qemu:///system"
state_dir = "/var/lib/stasis"
policies = "/etc/stasis/policies.toml"
default_repository = "local"

[repositories.local]
url = "/srv/stasis/repo"
passphrase_file = "/etc/stasis/local.pass"

[repositories.offsite]
url = "file:///mnt/offsite/stasis"
key_file = "/etc/stasis/offsite.key"
"""


def problems_of(text: str) -> list[str]:
    values, problems = check_config_text(text)
    assert values is None
    return [p.render("stasis.toml") for p in problems]


def test_the_example_is_read_whole() -> None:
    values, problems = check_config_text(EXAMPLE)
    assert problems == [] and values is not None
    assert values.catalog == "/var/lib/stasis/catalog.db"
    assert values.libvirt == "qemu:///system"
    assert values.policies == "/etc/stasis/policies.toml"
    assert values.repositories["local"].passphrase_file == "/etc/stasis/local.pass"
    assert values.repositories["offsite"].key_file == "/etc/stasis/offsite.key"
    assert values.repositories["offsite"].url == "file:///mnt/offsite/stasis"


def test_every_problem_is_listed_with_its_line() -> None:
    text = """\
catalog = "relative.db"
libvirt = 3
colour = "blue"
state_dir = "var/lib"
default_repository = "nowhere"

[repositories.local]
url = "/srv/repo"
passphrase = "hunter2"

[repositories.both]
url = "gs://bucket/x"
passphrase_file = "/etc/a"
key_file = "/etc/b"

[repositories.none]
url = "/srv/none"
key_fil = "/etc/k"

[repositories."bad/name"]
url = "/srv/x"
key_file = "relative.key"
"""
    assert problems_of(text) == [
        'stasis.toml:1: catalog must be an absolute path or a URL, not "relative.db"',
        "stasis.toml:2: libvirt must be a string, not 3",
        "stasis.toml:3: unknown key 'colour' (known: catalog, default_repository, "
        "insecure_http, libvirt, listen, policies, repositories, scratch_dir, state_dir, "
        "tls_certificate, tls_key)",
        'stasis.toml:4: state_dir must be an absolute path, not "var/lib": a relative path '
        "would depend on the directory a command runs in",
        "stasis.toml:5: default_repository 'nowhere' is not a configured repository "
        "(configured: bad/name, both, local, none)",
        "stasis.toml:9: 'repositories.local.passphrase' would hold a secret in the config "
        "file, which is refused: put it in a file only its owner reads (chmod 600) and name "
        "that file with passphrase_file or key_file",
        "stasis.toml:12: repositories.both.url: the scheme 'gs' is not supported (a local "
        "path or file://, s3://)",
        "stasis.toml:14: repositories.both has both passphrase_file and key_file: give one "
        "of them",
        "stasis.toml:16: repositories.none does not say how its key is unlocked: give "
        "passphrase_file or key_file",
        "stasis.toml:18: unknown key 'key_fil' in repositories.none (did you mean "
        "'key_file'?)",
        "stasis.toml:20: repositories.bad/name: the name must be a repository name: 1 to 64 "
        "letters, digits, '.', '_' or '-', starting with a letter, not \"bad/name\"",
        'stasis.toml:22: repositories.bad/name.key_file must be an absolute path, not '
        '"relative.key"',
    ]


def test_syntax_errors_and_several_repositories_without_a_default() -> None:
    assert problems_of('catalog = "/x"\nlibvirt = \n') == [
        "stasis.toml:2: TOML syntax error: invalid value (column 11)"]
    assert problems_of(EXAMPLE.replace('default_repository = "local"\n', "")) == [
        "stasis.toml:6: there are several repositories and no default_repository: say "
        "which one a command uses when none is named"]
    # One repository is the default without saying so.
    values, _ = check_config_text('[repositories.only]\nurl = "/r"\nkey_file = "/k"\n')
    assert values is not None and Config(None, values).default_repository == "only"


def test_a_named_file_must_exist_and_which_file_is_in_force(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError) as e:
        load_config(tmp_path / "missing.toml")
    assert e.value.exit_code == 38 and "no such file" in e.value.message
    default = tmp_path / "default.toml"
    env = {"STASIS_CONFIG": str(tmp_path / "env.toml")}
    assert find_config(None, {}, default=default) == (None, None)  # a missing default: none
    default.write_text("")
    assert find_config(None, {}, default=default) == (default, "default")
    assert find_config(None, env, default=default) == (tmp_path / "env.toml", "env")
    assert find_config(tmp_path / "flag.toml", env, default=default) == (
        tmp_path / "flag.toml", "flag")
    assert load_config(default).repositories == {}


def test_secrets_files_others_can_read_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    secret.write_text("x")
    for mode in (0o600, 0o640):
        secret.chmod(mode)
        check_private(secret, "passphrase file")
    for mode in (0o644, 0o602, 0o601):
        secret.chmod(mode)
        with pytest.raises(UsageError, match="accessible to every user"):
            check_private(secret, "passphrase file")


# ------------------------------------------------------------------ through the CLI


def write_config(path: Path, **keys: str) -> Path:
    lines = [f'{k} = "{v}"' for k, v in keys.items() if not k.startswith("repo_")]
    path.write_text("\n".join(lines) + "\n")
    return path


def named_repos(cli: Cli, tmp_path: Path, *names: str, mode: int = 0o600) -> Path:
    """Repositories ``names`` under tmp_path, each with its passphrase file, and a config
    naming them (the first the default)."""
    text = f'default_repository = "{names[0]}"\n'
    for name in names:
        init_repo(tmp_path / name, passphrase=f"{PASSPHRASE} {name}")
        secret = tmp_path / f"{name}.pass"
        secret.write_text(f"{PASSPHRASE} {name}\n")
        secret.chmod(mode)
        text += f'[repositories.{name}]\nurl = "{tmp_path / name}"\n' \
                f'passphrase_file = "{secret}"\n'
    config = tmp_path / "stasis.toml"
    config.write_text(text)
    return config


def no_passphrase(cli: Cli) -> Cli:
    env = {k: v for k, v in cli.env.items() if k not in ("STASIS_PASSPHRASE", "STASIS_REPO")}
    return Cli(cli.repo, env)


def test_a_repository_opened_by_name_with_its_passphrase_file(cli: Cli, tmp_path: Path) -> None:
    cli = no_passphrase(cli)
    config = named_repos(cli, tmp_path, "local", "offsite")
    img = mixed_image(tmp_path / "d.raw", size=2 << 20)
    c = ["--config", str(config)]
    cli.ok(*c, "backup", "image", str(img), "--name", "into-offsite", "--repo", "offsite")
    cli.ok(*c, "backup", "image", str(img), "--name", "into-default")
    names = {r: [p["name"] for p in cli.ok(*c, "list", "--json", "--repo", r).json()]  # type: ignore[union-attr]
             for r in ("local", "offsite")}
    assert names == {"local": ["into-default"], "offsite": ["into-offsite"]}
    # The environment beats the file's default; a flag beats the environment.
    env = {"STASIS_REPO": "offsite"}
    assert [p["name"] for p in cli.ok(*c, "list", "--json", env=env).json()] == [  # type: ignore[union-attr]
        "into-offsite"]
    assert [p["name"] for p in cli.ok(*c, "list", "--json", "-r", "local", env=env).json()] == [  # type: ignore[union-attr]
        "into-default"]
    # $STASIS_PASSPHRASE says otherwise than the passphrase file: it is the one used.
    wrong = cli(*c, "list", env={"STASIS_PASSPHRASE": "wrong"})
    assert wrong.code == 13, wrong.err
    # A path given as --repo is a path: no configured passphrase file goes with it.
    path = cli(*c, "list", "--repo", str(tmp_path / "local"))
    assert path.code == 13 and "empty passphrase" in path.err, path.err


def test_a_passphrase_file_every_user_can_read_is_refused(cli: Cli, tmp_path: Path) -> None:
    cli = no_passphrase(cli)
    config = named_repos(cli, tmp_path, "local", mode=0o644)
    r = cli("--config", str(config), "list")
    assert r.code == 2
    assert "local.pass is accessible to every user (mode -rw-r--r--)" in r.err
    assert "chmod o-rwx" in r.err


def test_flags_beat_the_environment_which_beats_the_file(cli: Cli, tmp_path: Path) -> None:
    env = {k: v for k, v in cli.env.items() if k not in ("STASIS_STATE_DIR", "STASIS_REPO")}
    cli = Cli(cli.repo, env)
    config = write_config(tmp_path / "stasis.toml", catalog=str(tmp_path / "file.db"),
                          libvirt="test:///default", policies=str(tmp_path / "file.toml"),
                          state_dir=str(tmp_path / "file-state"),
                          scratch_dir=str(tmp_path / "file-scratch"))

    def shown(*args: str, **env: str) -> dict[str, tuple[str | None, str]]:
        out = cli.ok("--config", str(config), "config", "show", "--json", *args, env=env).json()
        assert isinstance(out, dict)
        return {k: (v["value"], v["source"]) for k, v in out["settings"].items()}

    values = shown()
    assert values["catalog"] == (str(tmp_path / "file.db"), "file")
    assert values["libvirt"] == ("test:///default", "file")
    assert values["policies"] == (str(tmp_path / "file.toml"), "file")
    assert values["state_dir"] == (str(tmp_path / "file-state"), "file")
    assert values["scratch_dir"] == (str(tmp_path / "file-scratch"), "file")
    values = shown(STASIS_CATALOG="/env.db", STASIS_CONNECT="test:///env",
                   STASIS_POLICIES="/env.toml", STASIS_STATE_DIR="/env-state",
                   STASIS_SCRATCH_DIR="/env-scratch", STASIS_REPO="/env-repo")
    assert values == {"repository": ("/env-repo", "env"), "catalog": ("/env.db", "env"),
                      "libvirt": ("test:///env", "env"), "policies": ("/env.toml", "env"),
                      "state_dir": ("/env-state", "env"),
                      "scratch_dir": ("/env-scratch", "env")}
    values = shown("--catalog", "/flag.db", "--connect", "test:///flag", "--policies",
                   "/flag.toml", "--repo", "/flag-repo", STASIS_CATALOG="/env.db",
                   STASIS_CONNECT="test:///env", STASIS_POLICIES="/env.toml",
                   STASIS_REPO="/env-repo")
    assert values["catalog"] == ("/flag.db", "flag")
    assert values["libvirt"] == ("test:///flag", "flag")
    assert values["policies"] == ("/flag.toml", "flag")
    assert values["repository"] == ("/flag-repo", "flag")
    # With no file, the defaults.
    bare = cli.ok("config", "show", "--json").json()
    assert isinstance(bare, dict) and bare["file"] is None
    assert bare["settings"]["libvirt"] == {"value": lv.DEFAULT_URI, "source": "default"}

    # The real commands take the same values: the catalog and the state directory...
    c = ["--config", str(config)]
    cli.ok(*c, "jobs", "--json")
    assert (tmp_path / "file.db").exists()
    cli.ok(*c, "jobs", "--json", env={"STASIS_CATALOG": str(tmp_path / "env.db")})
    assert (tmp_path / "env.db").exists()
    cli.ok(*c, "jobs", "--catalog", str(tmp_path / "flag.db"),
           env={"STASIS_CATALOG": str(tmp_path / "env2.db")})
    assert (tmp_path / "flag.db").exists() and not (tmp_path / "env2.db").exists()
    no_catalog = write_config(tmp_path / "paths.toml", state_dir=str(tmp_path / "st"))
    cli.ok("--config", str(no_catalog), "jobs")
    assert (tmp_path / "st" / "catalog.db").exists()
    # ... and libvirt.
    try:
        lv.connect("test:///default")
    except HypervisorError:
        return
    vms = cli.ok(*c, "vms", "--json").json()
    assert isinstance(vms, list) and [v["name"] for v in vms] == ["test"]
    bad = cli(*c, "vms", "--json", env={"STASIS_CONNECT": "test:///nonexistent-file.xml"})
    assert bad.code == 22, bad.err
    assert cli.ok(*c, "vms", "--json", "--connect", "test:///default",
                  env={"STASIS_CONNECT": "test:///nonexistent-file.xml"}).json() == vms


def test_config_show_names_secret_files_never_secrets(cli: Cli, tmp_path: Path) -> None:
    cli = no_passphrase(cli)
    config = named_repos(cli, tmp_path, "local", "offsite")
    out = cli.ok("--config", str(config), "config", "show", "--json")
    shown = out.json()
    assert isinstance(shown, dict)
    assert shown["file"] == str(config) and shown["file_source"] == "flag"
    assert shown["default_repository"] == "local"
    assert shown["settings"]["repository"] == {"value": "local", "source": "file"}
    assert shown["repositories"] == [
        {"name": n, "url": str(tmp_path / n), "unlock": "passphrase_file",
         "secret_file": str(tmp_path / f"{n}.pass"), "default": n == "local"}
        for n in ("local", "offsite")]
    assert PASSPHRASE not in out.out
    env = cli.ok("config", "show", env={"STASIS_CONFIG": str(config)})
    assert f"config file: {config} (env)" in env.out and PASSPHRASE not in env.out
    broken = tmp_path / "broken.toml"
    broken.write_text('[repositories.x]\nurl = "/r"\npassword = "hunter2"\n')
    r = cli("--config", str(broken), "config", "show")
    assert r.code == 38 and f"{broken}:3: 'repositories.x.password' would hold a secret" in r.err


# ------------------------------------------------------------------ serve


TWO_POLICIES = """\
[[policy]]
name = "home"
vms = ["no-such-vm-1"]
every = "1m"

[[policy]]
name = "away"
vms = ["no-such-vm-2"]
every = "1m"
repository = "offsite"
"""


def test_policies_name_only_repositories_the_service_serves() -> None:
    policies = parse_policies(TWO_POLICIES, repositories={"local", "offsite"})
    assert [p.repository for p in policies] == [None, "offsite"]
    with pytest.raises(PolicyError) as e:
        parse_policies(TWO_POLICIES, file="p.toml", repositories={"local"})
    assert [p.render("p.toml") for p in e.value.problems] == [
        "p.toml:10: policy 'away': repository 'offsite' is not one the service serves "
        "(configured: local)"]
    assert parse_policies(TWO_POLICIES)[1].repository == "offsite"  # no service: not checked


def test_serve_queues_each_policy_on_its_named_repository(
        tmp_path: Path, catalog_template: Path) -> None:
    local, offsite = init_repo(tmp_path / "local"), init_repo(tmp_path / "offsite")
    opened: list[str] = []

    def opener(r: Repository, name: str) -> object:
        def open_it() -> Repository:
            opened.append(name)
            return r
        return open_it

    clock = ManualClock(datetime(2025, 3, 1, 12, 0, 30, tzinfo=UTC))
    policies = parse_policies(TWO_POLICIES, repositories={"local", "offsite"})
    (tmp_path / "run").mkdir()
    (tmp_path / "scratch").mkdir()
    with Catalog.open(str(seed_catalog(catalog_template, tmp_path / "c.db")), clock=clock) as c:
        s = Service(c, policies,
                    repositories={"local": opener(local, "local"),  # type: ignore[dict-item]
                                  "offsite": opener(offsite, "offsite")},
                    default_repository="local", connect=lambda: lv.connect("test:///default"),
                    run_dir=tmp_path / "run", scratch_dir=tmp_path / "scratch")
        s.start()
        clock.tick(minutes=1)
        s.due()
        queued = {j.policy: j.repo for j in JobStore(c).list(state="queued")}
        assert queued == {"home": local.id, "away": offsite.id}
        assert s.repo_of(policies[0]) is local and s.repo_of(policies[1]) is offsite
        assert sorted(opened) == ["local", "offsite"] and len(opened) == 2  # each opened once
        s.stop()


def test_serve_opens_every_configured_repository_at_start(cli: Cli, tmp_path: Path) -> None:
    cli = no_passphrase(cli)
    config = named_repos(cli, tmp_path, "local", "offsite")
    policies = tmp_path / "p.toml"
    policies.write_text(TWO_POLICIES.replace("offsite", "elsewhere"))
    c = ["--config", str(config), "serve", "--policies", str(policies), "--catalog",
         str(tmp_path / "c.db")]
    r = cli(*c, timeout=60)
    assert r.code == 29 and "repository 'elsewhere' is not one the service serves " \
                           "(configured: local, offsite)" in r.err, r.err
    # A repository that cannot be opened stops the service at start, not at its first job.
    (tmp_path / "offsite.pass").write_text("wrong\n")
    policies.write_text(TWO_POLICIES)
    r = cli(*c, timeout=60)
    assert r.code == 13 and "offsite" in r.err, r.err
    # Secrets files are the config's business: --passphrase-file needs --repo.
    r = cli(*c, "--passphrase-file", str(tmp_path / "local.pass"), timeout=60)
    assert r.code == 2 and "--passphrase-file" in r.err, r.err
    assert os.stat(tmp_path / "offsite.pass").st_mode & 0o777 == 0o600


def test_the_documented_examples_load_and_the_unit_holds_no_secret() -> None:
    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "config.md").read_text()
    blocks = doc.split("```toml\n")[1:]
    config_text, policies_text = (b.split("```")[0] for b in blocks[:2])
    values, problems = check_config_text(config_text)
    assert problems == [] and values is not None
    policies = parse_policies(policies_text, repositories=set(values.repositories))
    assert [p.repository for p in policies] == [None, "offsite"]
    readme = (root / "README.md").read_text().split("## The config file")[1]
    assert check_config_text(readme.split("```toml\n")[1].split("```")[0])[1] == []
    unit = (root / "contrib" / "systemd" / "stasis.service").read_text()
    settings = [line for line in unit.splitlines() if line and not line.startswith("#")]
    assert not any(line.startswith(("EnvironmentFile", "Environment=")) for line in settings)
    assert "ExecStart=/usr/local/bin/stasis --config /etc/stasis/stasis.toml serve " \
           "--keep-logs 30d" in settings


def test_policy_check_knows_the_configured_repositories(cli: Cli, tmp_path: Path) -> None:
    cli = no_passphrase(cli)
    config = named_repos(cli, tmp_path, "local")
    policies = tmp_path / "p.toml"
    policies.write_text(TWO_POLICIES)
    cli.ok("policy", "check", str(policies))  # no config: any name goes
    r = cli("--config", str(config), "policy", "check", str(policies))
    assert r.code == 29 and f"{policies}:10: policy 'away': repository 'offsite' is not one " \
                           "the service serves (configured: local)" in r.err, r.err
    checked = cli("--config", str(config), "policy", "check", "--json", str(policies))
    assert checked.code == 29 and [p["line"] for p in checked.json()["problems"]] == [10]  # type: ignore[index]


def test_the_api_keys_are_checked() -> None:
    assert problems_of('listen = "8080"\ntls_certificate = "cert.pem"\n') == [
        "stasis.toml:1: listen '8080': expected HOST:PORT, [IPV6]:PORT or unix:/PATH; "
        "nothing was started",
        "stasis.toml:1: tls_certificate and tls_key go together: give both, or neither",
        'stasis.toml:2: tls_certificate must be an absolute path, not "cert.pem": a '
        "relative path would depend on the directory a command runs in",
    ]
    values, problems = check_config_text(
        'listen = "0.0.0.0:8443"\ntls_certificate = "/etc/stasis/api.crt"\n'
        'tls_key = "/etc/stasis/api.key"\n')
    assert problems == [] and values is not None and values.listen == "0.0.0.0:8443"
