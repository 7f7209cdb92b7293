"""The server config file: one TOML file with the catalog, the libvirt URI, the paths
and the named repositories (docs/config.md has every key and an example).

:func:`stasis.settings.find_config` says which file is in force (``--config``,
else ``$STASIS_CONFIG``, else ``/etc/stasis/stasis.toml`` when it exists, else none);
:func:`load_config` reads and checks it whole, like a policy file: unknown keys and
inline secrets are refused, and every problem is listed with its line
(:class:`~stasis.errors.ConfigFileError`). A value of the file is the last fallback:
a flag beats the environment, which beats the file, which beats the built-in
default; the interfaces apply that order (the CLI through its option defaults) and
pass resolved values down, so no operation reads the file itself.

A repository's key is unlocked through a file the config names (a passphrase file
or a key file), never a secret written in the config; such a file must not be
readable or writable by others (:func:`check_private`), as ssh refuses a private key
others can read. :func:`effective_config` is what ``stasis config show`` prints:
each value with where it came from, secrets never (only their files' paths).
"""

from __future__ import annotations

import difflib
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from stasis.app.models import ConfigSource as Source
from stasis.app.models import ConfiguredRepository, ConfigValue, EffectiveConfig
from stasis.errors import ConfigFileError, UsageError
from stasis.service.policy import Problem, key_lines
from stasis.service.policy.loading import syntax_problem
from stasis.service.policy.toml_lines import KeyPath
from stasis.service.policy.values import RepositoryName, Text, show

#: Keys that would hold a secret inline: refused with a message of their own.
INLINE_SECRETS = frozenset({"passphrase", "password", "key", "secret", "keyfile"})

class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RepositoryConfig(_Model):
    """A named repository: where it is and the file that unlocks its key."""

    url: Text
    passphrase_file: Text | None = None
    key_file: Text | None = None

    @property
    def secret_file(self) -> Path:
        """The key file, else the passphrase file (the rules make exactly one set)."""
        return Path(self.key_file or self.passphrase_file or "")


class ConfigFile(_Model):
    """The keys of a config file; every one optional."""

    catalog: Text | None = None
    libvirt: Text | None = None
    state_dir: Text | None = None
    scratch_dir: Text | None = None
    policies: Text | None = None
    default_repository: RepositoryName | None = None
    repositories: dict[RepositoryName, RepositoryConfig] = {}
    # the REST API of stasis serve
    listen: Text | None = None  # HOST:PORT, [IPV6]:PORT or unix:/PATH
    tls_certificate: Text | None = None
    tls_key: Text | None = None
    insecure_http: bool = False  # plain HTTP on a non-loopback address (TLS in a proxy)


def _keys_of(model: type[BaseModel]) -> list[str]:
    return sorted(model.model_fields)


KNOWN_KEYS = {"": _keys_of(ConfigFile), "repository": _keys_of(RepositoryConfig)}
PATH_KEYS = ("state_dir", "scratch_dir", "policies", "tls_certificate", "tls_key")


@dataclass(frozen=True)
class Config:
    """A checked config file (``file`` None: no file, every value its default)."""

    file: Path | None = None
    values: ConfigFile = field(default_factory=ConfigFile)

    @property
    def repositories(self) -> Mapping[str, RepositoryConfig]:
        return self.values.repositories

    @property
    def default_repository(self) -> str | None:
        """``default_repository``, else the only repository, else None."""
        if self.values.default_repository is not None:
            return self.values.default_repository
        if len(self.repositories) == 1:
            return next(iter(self.repositories))
        return None

    def repository(self, value: str | None) -> tuple[str, RepositoryConfig] | None:
        """The configured repository that ``value`` (a ``--repo`` value) names, if any."""
        if value is not None and value in self.repositories:
            return value, self.repositories[value]
        return None

    def path(self, key: str) -> Path | None:
        value = getattr(self.values, key)
        return None if value is None else Path(value)


NO_CONFIG = Config()


# ------------------------------------------------------------------ finding and loading


def load_config(path: Path | None) -> Config:
    """The checked config file at ``path`` (None: no file);
    :class:`ConfigFileError` listing every problem otherwise. A file that was named
    (by flag or environment) must exist."""
    if path is None:
        return NO_CONFIG
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(path, "it does not exist", f"{path}: no such file",
                              problems=[Problem(0, None, "no such file")]) from None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else str(e)
        raise ConfigFileError(path, "it cannot be read", f"{path}: {reason}",
                              problems=[Problem(0, None, f"cannot be read ({reason})")]
                              ) from None
    values, problems = check_config_text(text)
    if problems or values is None:
        count = f"{len(problems)} problem" + ("" if len(problems) == 1 else "s")
        raise ConfigFileError(path, count, "\n".join(p.render(str(path)) for p in problems),
                              problems=problems)
    return Config(path.absolute(), values)


def check_config_text(text: str) -> tuple[ConfigFile | None, list[Problem]]:
    """The checked keys of a config text, or every problem found with its line."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return None, [syntax_problem(e)]
    lines = key_lines(text)
    problems: list[Problem] = []

    def add(path: KeyPath, message: str) -> None:
        line = next((lines[path[:n]] for n in range(len(path), 0, -1) if path[:n] in lines), 1)
        problems.append(Problem(line, None, message))

    values: ConfigFile | None = None
    try:
        values = ConfigFile.model_validate(raw)
    except ValidationError as e:
        for error in e.errors():
            loc: KeyPath = tuple(error["loc"])
            add(loc, _message(loc, error))
    _rule_problems(raw, add)
    if problems:
        return None, sorted(set(problems))
    return values, []


def _dotted(loc: KeyPath) -> str:
    return ".".join(str(p) for p in loc)


def _message(loc: KeyPath, error: Any) -> str:
    kind = error["type"]
    what = _dotted(loc)
    if kind == "extra_forbidden":
        key = str(loc[-1])
        if key in INLINE_SECRETS:
            return (f"'{what}' would hold a secret in the config file, which is refused: "
                    "put it in a file only its owner reads (chmod 600) and name that file "
                    "with passphrase_file or key_file")
        known = KNOWN_KEYS["repository" if loc[0] == "repositories" else ""]
        hint = difflib.get_close_matches(key, known, n=1)
        where = f" in {_dotted(loc[:-1])}" if len(loc) > 1 else ""
        return f"unknown key '{key}'{where}" + (
            f" (did you mean '{hint[0]}'?)" if hint else f" (known: {', '.join(known)})")
    if kind == "missing":
        return f"{what} is missing"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"{what} must be a table, not {show(error.get('input'))}"
    if kind == "string_type":
        return f"{what} must be a string, not {show(error.get('input'))}"
    if loc and loc[0] == "repositories" and len(loc) == 3 and loc[2] == "[key]":
        return f"repositories.{loc[1]}: the name {error['msg']}"
    return f"{what} {error['msg']}"


def _rule_problems(raw: Mapping[str, Any], add: Any) -> None:
    """The rules between keys, on the values that are well formed."""
    from stasis.backends.registry import SCHEMES, scheme_of

    for key in PATH_KEYS:
        value = raw.get(key)
        if isinstance(value, str) and not Path(value).is_absolute():
            add((key,), f"{key} must be an absolute path, not {show(value)}: a relative "
                        "path would depend on the directory a command runs in")
    if ("tls_certificate" in raw) != ("tls_key" in raw):
        add(("tls_key" if "tls_certificate" in raw else "tls_certificate",),
            "tls_certificate and tls_key go together: give both, or neither")
    listen = raw.get("listen")
    if isinstance(listen, str):
        from stasis.app.listen import parse_listen

        try:
            parse_listen(listen)
        except UsageError as e:
            add(("listen",), e.message.replace("--listen ", "listen "))
    catalog = raw.get("catalog")
    if isinstance(catalog, str) and "://" not in catalog and not Path(catalog).is_absolute():
        add(("catalog",), f"catalog must be an absolute path or a URL, not {show(catalog)}")
    repositories = raw.get("repositories")
    if not isinstance(repositories, dict):
        return
    for name, r in repositories.items():
        if not isinstance(r, dict):
            continue
        at: KeyPath = ("repositories", name)
        url = r.get("url")
        if isinstance(url, str):
            scheme = scheme_of(url)
            if scheme is None and not Path(url).is_absolute():
                add((*at, "url"), f"repositories.{name}.url must be an absolute path or a "
                                  f"URL, not {show(url)}")
            elif scheme is not None and scheme not in SCHEMES:
                known = ", ".join(f"{s}://" for s in sorted(SCHEMES))
                add((*at, "url"), f"repositories.{name}.url: the scheme '{scheme}' is not "
                                  f"supported (a local path or {known})")
        secrets = [k for k in ("passphrase_file", "key_file") if k in r]
        if len(secrets) == 2:
            add((*at, "key_file"), f"repositories.{name} has both passphrase_file and "
                                   "key_file: give one of them")
        elif not secrets and not any(k in INLINE_SECRETS for k in r):
            add(at, f"repositories.{name} does not say how its key is unlocked: give "
                    "passphrase_file or key_file")
        for k in secrets:
            value = r.get(k)
            if isinstance(value, str) and not Path(value).is_absolute():
                add((*at, k), f"repositories.{name}.{k} must be an absolute path, not "
                              f"{show(value)}")
    default = raw.get("default_repository")
    if isinstance(default, str) and default not in repositories:
        known = ", ".join(sorted(str(n) for n in repositories)) or "none"
        add(("default_repository",), f"default_repository '{default}' is not a configured "
                                     f"repository (configured: {known})")
    elif default is None and len(repositories) > 1:
        add(("repositories",), "there are several repositories and no default_repository: "
                               "say which one a command uses when none is named")


# ------------------------------------------------------------------ secrets


def check_private(path: Path, what: str) -> None:
    """Refuse a secrets file that others may read or write (:class:`UsageError`)."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise UsageError(f"cannot read the {what} {path}: {e.strerror}; nothing was opened"
                         ) from None
    if mode & (stat.S_IRWXO):
        raise UsageError(
            f"the {what} {path} is accessible to every user (mode {stat.filemode(mode)}): "
            "a secret must be readable by its owner (and group) only; nothing was opened",
            hint=f"Run 'chmod o-rwx {path}'.")


# ------------------------------------------------------------------ what is in force


Given = Mapping[str, tuple[str | None, Source]]


def effective_config(config: Config, given: Given, *, file_source: Source | None,
                     env: Mapping[str, str] | None = None) -> EffectiveConfig:
    """What is in force: ``given`` holds the values an interface resolved itself, by
    setting name (``catalog``, ``libvirt``, ``repository``, ``policies``), each with
    its source; the paths (``state_dir``, ``scratch_dir``) are resolved here, the same
    way :mod:`stasis.settings` does."""
    from stasis.settings import default_scratch_dir, default_state_dir

    env = os.environ if env is None else env
    settings = {name: ConfigValue(value=value, source=source)
                for name, (value, source) in given.items()}
    for key, var in (("state_dir", "STASIS_STATE_DIR"), ("scratch_dir", "STASIS_SCRATCH_DIR")):
        if env.get(var):
            settings[key] = ConfigValue(value=env[var], source="env")
        elif getattr(config.values, key) is not None:
            settings[key] = ConfigValue(value=getattr(config.values, key), source="file")
        else:
            settings[key] = ConfigValue(value=str(
                default_state_dir(env) if key == "state_dir"
                else default_scratch_dir(partial(Path, settings["state_dir"].value or "."))),
                source="default")
    catalog = settings.get("catalog")
    if catalog is not None and catalog.value is None:
        catalog.value = str(Path(settings["state_dir"].value or ".") / "catalog.db")
    default = config.default_repository
    return EffectiveConfig(
        file=None if config.file is None else str(config.file), file_source=file_source,
        settings=settings, default_repository=default,
        repositories=[ConfiguredRepository(
            name=name, url=r.url, unlock="key_file" if r.key_file else "passphrase_file",
            secret_file=str(r.secret_file), default=name == default)
            for name, r in config.repositories.items()])
