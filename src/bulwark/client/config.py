"""Where the SDK and the command line find their connection settings: flags, environment, credentials file, profiles.

One resolver serves both: the command line hands it what its flags (or their variables) gave,
``BulwarkClient.from_env()`` what the environment gives, and each then reads the same credentials
file and profiles and applies the same defaults. Importing this module stays cheap (no httpx, no
pydantic): the command line reads its variable names from here before it knows what will run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from bulwark.client.errors import ConfigurationError

if TYPE_CHECKING:
    import ssl

APP_NAME = "bulwark"
LOCAL_API_URL = "http://127.0.0.1:8000"
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
DEFAULT_SCOPE = "https://api.securitycenter.microsoft.com/.default"
MICROSOFT_API_HOSTS = ("api.securitycenter.microsoft.com", "api.security.microsoft.com")
CONFIG_FILE_NAME = "config.json"
TOKEN_CACHE_FILE_NAME = "token-cache.json"
# The secrets a profile may hold; shown redacted unless asked for.
SECRET_FIELDS = frozenset({"client_secret", "token"})

# The environment variable(s) of each setting, the first one set winning: the command line's
# flags read these, and so does BulwarkClient.from_env().
ENVIRONMENT_VARIABLES: dict[str, tuple[str, ...]] = {
    "api_url": ("BULWARK_API_URL",),
    "authority": ("BULWARK_AUTHORITY",),
    "tenant_id": ("BULWARK_TENANT_ID", "BULWARK_TENANT"),
    "client_id": ("BULWARK_CLIENT_ID",),
    "client_secret": ("BULWARK_CLIENT_SECRET",),
    "token": ("BULWARK_TOKEN",),
    "scope": ("BULWARK_SCOPE",),
    "credentials_file": ("BULWARK_CREDENTIALS_FILE",),
    "insecure": ("BULWARK_INSECURE",),
    "ca_file": ("BULWARK_CA_FILE",),
}
PROFILE_VARIABLE = "BULWARK_PROFILE"
CONFIG_VARIABLE = "BULWARK_CONFIG"
TOKEN_CACHE_VARIABLE = "BULWARK_TOKEN_CACHE"
# How click (and so the command line) reads a yes/no variable; the SDK reads them alike.
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything needed to reach the API; None means "not given at this layer"."""

    api_url: str | None = None
    authority: str | None = None
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    token: str | None = None
    scope: str | None = None
    credentials_file: str | None = None
    insecure: bool | None = None
    ca_file: str | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ConnectionSettings:
        """Settings from a profile's mapping, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known and value is not None})

    def as_mapping(self) -> dict[str, Any]:
        """The settings that are set, as a plain mapping (what a profile stores)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def over(self, lower: ConnectionSettings) -> ConnectionSettings:
        """These settings, with `lower` filling in whatever these leave unset."""
        values = lower.as_mapping()
        values.update(self.as_mapping())
        return ConnectionSettings(**values)

    @property
    def uses_token(self) -> bool:
        """Whether a ready bearer token is used rather than the client-credentials grant."""
        return bool(self.token)


@dataclass(frozen=True)
class ResolvedConnection:
    """The settings a command will use, with defaults applied, ready for a client constructor."""

    api_url: str
    authority: str
    scope: str
    verify: bool | ssl.SSLContext
    token: str | None = None
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)

    def client_arguments(self) -> dict[str, Any]:
        """Keyword arguments for BulwarkClient / AsyncBulwarkClient (all but `verify`)."""
        if self.token:
            return {"base_url": self.api_url, "token": self.token}
        return {
            "base_url": self.api_url,
            "tenant_id": self.tenant_id,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "authority": self.authority,
            "scope": self.scope,
        }


def resolve_connection(
    explicit: ConnectionSettings,
    *,
    profile_name: str | None,
    config_path: Path,
) -> ResolvedConnection:
    """Merge the layers (flags and environment, then the credentials file, then the profile).

    `explicit` holds what flags and environment variables gave (click has already let a flag win
    over its variable). A named profile must exist; without a name, the config file's default
    profile is used when there is one.
    """
    profile = load_profile(config_path, profile_name)
    merged = explicit.over(profile)
    credentials_file = merged.credentials_file
    if credentials_file:
        # The file sits between what was typed and what was saved: a flag still wins over it.
        file_settings = read_credentials_file(Path(credentials_file), client_id=merged.client_id)
        merged = explicit.over(file_settings).over(profile)
    return _with_defaults(merged)


def resolve_from_environment(
    environ: Mapping[str, str] | None = None,
    explicit: ConnectionSettings | None = None,
    *,
    profile_name: str | None = None,
) -> ResolvedConnection:
    """The settings in force for `environ` (default: this process's), as the command line resolves them.

    `explicit` (what a caller passed in code) wins over the environment, as a flag does on the
    command line; then come the credentials file, the profile (`profile_name`, else
    BULWARK_PROFILE, else the config file's default) and the defaults.
    """
    env = os.environ if environ is None else environ
    layered = (explicit or ConnectionSettings()).over(settings_from_environment(env))
    profile = profile_name or first_variable(env, (PROFILE_VARIABLE,))
    return resolve_connection(layered, profile_name=profile, config_path=config_file_from_environment(env))


def _with_defaults(settings: ConnectionSettings) -> ResolvedConnection:
    api_url = (settings.api_url or LOCAL_API_URL).rstrip("/")
    authority = settings.authority or default_authority(api_url)
    verify: bool | ssl.SSLContext = True
    if settings.insecure:
        verify = False
    elif settings.ca_file:
        import ssl

        try:
            verify = ssl.create_default_context(cafile=settings.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"Cannot read the CA file {settings.ca_file}: {exc}") from exc
    scope = settings.scope or DEFAULT_SCOPE
    if settings.token:
        return ResolvedConnection(api_url=api_url, authority=authority, scope=scope, verify=verify, token=settings.token)
    missing = [
        f"{flag} ({ENVIRONMENT_VARIABLES[name][0]})"
        for flag, name, value in (
            ("--tenant", "tenant_id", settings.tenant_id),
            ("--client-id", "client_id", settings.client_id),
            ("--client-secret", "client_secret", settings.client_secret),
        )
        if not value
    ]
    if missing:
        raise ConfigurationError(
            "No credentials: give --token, or --tenant, --client-id and --client-secret, or "
            f"--credentials-file, or a --profile that holds them (missing: {', '.join(missing)})"
        )
    return ResolvedConnection(
        api_url=api_url,
        authority=authority,
        scope=scope,
        verify=verify,
        tenant_id=settings.tenant_id,
        client_id=settings.client_id,
        client_secret=settings.client_secret,
    )


def default_authority(api_url: str) -> str:
    """Where tokens for `api_url` come from when no authority is given.

    A Bulwark server is its own token authority; only the live API's tokens come from Entra ID,
    so a client secret goes to login.microsoftonline.com only when the API itself is Microsoft's.
    """
    host = urlsplit(api_url).hostname or ""
    return DEFAULT_AUTHORITY if host in MICROSOFT_API_HOSTS else api_url.rstrip("/")


# The environment -------------------------------------------------------------------------------


def first_variable(environ: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    """The value of the first of `names` that is set and not empty (as click reads `envvar`)."""
    for name in names:
        value = environ.get(name)
        if value:
            return value
    return None


def parse_flag(value: str, name: str) -> bool:
    """A yes/no variable, spelled as click accepts it (1/0, true/false, yes/no, on/off)."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"{name}={value!r} is not a yes/no value (use true or false)")


def settings_from_environment(environ: Mapping[str, str]) -> ConnectionSettings:
    """The connection settings that BULWARK_* variables give."""
    values: dict[str, Any] = {}
    for name, variables in ENVIRONMENT_VARIABLES.items():
        value = first_variable(environ, variables)
        if value is not None:
            values[name] = parse_flag(value, variables[0]) if name == "insecure" else value
    return ConnectionSettings(**values)


def token_cache_wanted(environ: Mapping[str, str], *, default: bool) -> bool:
    """Whether BULWARK_TOKEN_CACHE asks for the token cache (`default` when it is not set)."""
    value = first_variable(environ, (TOKEN_CACHE_VARIABLE,))
    return default if value is None else parse_flag(value, TOKEN_CACHE_VARIABLE)


# Profiles ------------------------------------------------------------------------------------


def user_config_dir(app_name: str = APP_NAME) -> Path:
    """The user's config directory for the application, exactly where click's ``get_app_dir`` puts it.

    ``%APPDATA%\\bulwark`` on Windows, ``~/Library/Application Support/bulwark`` on macOS,
    ``$XDG_CONFIG_HOME/bulwark`` (default ``~/.config/bulwark``) elsewhere.
    """
    if sys.platform.startswith("win"):
        folder = os.environ.get("APPDATA")
        return Path(folder if folder is not None else os.path.expanduser("~")) / app_name
    if sys.platform == "darwin":
        return Path(os.path.expanduser("~/Library/Application Support")) / app_name
    return Path(os.environ.get("XDG_CONFIG_HOME", os.path.expanduser("~/.config"))) / "-".join(app_name.split()).lower()


def default_config_path(app_dir: str | Path | None = None) -> Path:
    """The config file in the user's config directory for the application (or in `app_dir`)."""
    return Path(app_dir if app_dir is not None else user_config_dir()) / CONFIG_FILE_NAME


def config_file(given: str | Path | None) -> Path:
    """The config file holding the profiles: the one given (flag or BULWARK_CONFIG), else the default."""
    return Path(given) if given else default_config_path()


def config_file_from_environment(environ: Mapping[str, str]) -> Path:
    """The config file BULWARK_CONFIG names, else the default one."""
    return config_file(first_variable(environ, (CONFIG_VARIABLE,)))


def token_cache_path(config: Path) -> Path:
    """Where the token cache lives: beside the config file, in the user's config directory by default."""
    return config.parent / TOKEN_CACHE_FILE_NAME


def read_config(path: Path) -> dict[str, Any]:
    """The config file's content: `{"default_profile": name, "profiles": {name: {...}}}`."""
    if not path.exists():
        return {"profiles": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"Cannot read the config file {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("profiles", {}), dict):
        raise ConfigurationError(f"The config file {path} is not a JSON object with a 'profiles' object")
    data.setdefault("profiles", {})
    return data


def write_config(path: Path, data: Mapping[str, Any]) -> None:
    """Write the config file readable by its owner only, since profiles may hold secrets."""
    write_private_json(path, data)


def write_private_json(path: Path, data: Any) -> None:
    """Replace `path` with `data` as JSON, atomically, the file readable by its owner only.

    The directory is created owner-only when missing. The new content goes to a fresh file made
    with mode 0600 from the start (O_EXCL: never an existing file or a planted symlink) and
    then takes the place of the old one, so a reader sees the old file or the new, never half.
    """
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def load_profile(path: Path, name: str | None) -> ConnectionSettings:
    """The named profile (which must exist), else the default profile, else nothing."""
    config = read_config(path)
    profiles: dict[str, Any] = config["profiles"]
    if name is None:
        name = config.get("default_profile")
        if not name or name not in profiles:
            return ConnectionSettings()
    if name not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigurationError(f"No profile named {name!r} in {path} (profiles: {known})")
    values = profiles[name]
    if not isinstance(values, dict):
        raise ConfigurationError(f"Profile {name!r} in {path} is not an object")
    return ConnectionSettings.from_mapping(values)


def save_profile(path: Path, name: str, settings: ConnectionSettings, *, make_default: bool) -> dict[str, Any]:
    """Merge `settings` into the named profile (creating it) and return the stored profile."""
    config = read_config(path)
    current = config["profiles"].get(name) or {}
    updated = ConnectionSettings.from_mapping(current).as_mapping()
    updated.update(settings.as_mapping())
    config["profiles"][name] = updated
    if make_default or not config.get("default_profile"):
        config["default_profile"] = name
    write_config(path, config)
    return updated


def redacted(values: Mapping[str, Any]) -> dict[str, Any]:
    """A profile with its secrets masked, for display."""
    return {key: ("********" if key in SECRET_FIELDS and value else value) for key, value in values.items()}


# The demo credentials file -------------------------------------------------------------------

# Spellings accepted for each value, compared after lower-casing and dropping "_", "-" and ".".
_TENANT_KEYS = ("tenantid", "tenant", "directoryid", "tid")
_AUTHORITY_KEYS = ("authority", "authorityurl", "authorityhost", "tokenauthority", "issuer")
_TOKEN_URL_KEYS = ("tokenurl", "tokenendpoint")
_API_URL_KEYS = ("apiurl", "baseurl", "api", "apibaseurl", "serverurl", "url")
_CLIENT_LIST_KEYS = ("clients", "applications", "apps", "serviceprincipals")
_CLIENT_ID_KEYS = ("clientid", "appid", "applicationid", "id")
_CLIENT_SECRET_KEYS = ("clientsecret", "secret", "secretvalue", "password")
_ROLE_KEYS = ("roles", "permissions", "scopes", "approles")
_SCOPE_KEYS = ("scope",)
_CA_KEYS = ("cacertificate", "cafile", "cacert", "cabundle")
# A client allowed to offboard is preferred when the file lists several.
_PREFERRED_ROLE = "machine.offboard"
_TOKEN_PATH = re.compile(r"/oauth2(/v2\.0)?/(token|authorize)/?$", re.IGNORECASE)


def _normalised(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {re.sub(r"[_\-. ]", "", str(key)).lower(): value for key, value in mapping.items()}


def _first(mapping: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = mapping.get(key)
        if value not in (None, "", [], {}):
            return value
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, Mapping):
        # e.g. {"tenant": {"id": ...}} or {"authority": {"url": ...}}
        value = _first(_normalised(value), ("id", "url", "value", "tenantid"))
    return str(value) if value not in (None, "") else None


def read_credentials_file(path: Path, *, client_id: str | None = None) -> ConnectionSettings:
    """Connection settings from a `demo-credentials.json` written by `bulwark serve --demo`.

    The reader is tolerant: keys may be snake_case or camelCase, and the application may be
    given at the top level or in a list. It reads the tenant (`tenant_id`), the token authority
    (`authority`, or a `token_url` from which it is derived), the API URL (`api_url`), and one
    application (`client_id`, `client_secret`) from `clients` / `applications` (the one whose id
    is `client_id` when given, else the first allowed to offboard, else the first). User names
    and passwords in the file are not used: the command line signs in as an application.
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"Cannot read the credentials file {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ConfigurationError(f"The credentials file {path} is not JSON: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"The credentials file {path} is not a JSON object")
    top = _normalised(raw)
    tenant_id = _text(_first(top, _TENANT_KEYS))
    authority = _text(_first(top, _AUTHORITY_KEYS))
    token_url = _text(_first(top, _TOKEN_URL_KEYS))
    if authority is None and token_url:
        authority = token_url
    client = _choose_client(top, client_id)
    if client is not None:
        tenant_id = _text(_first(client, _TENANT_KEYS)) or tenant_id
        authority = _text(_first(client, _AUTHORITY_KEYS)) or authority
    if authority:
        authority, tenant_in_url = _split_authority(authority, tenant_id)
        tenant_id = tenant_id or tenant_in_url
    return ConnectionSettings(
        api_url=_text(_first(top, _API_URL_KEYS)),
        authority=authority,
        tenant_id=tenant_id,
        client_id=_text(_first(client, _CLIENT_ID_KEYS)) if client else None,
        client_secret=_text(_first(client, _CLIENT_SECRET_KEYS)) if client else None,
        scope=_text(_first(top, _SCOPE_KEYS)),
        ca_file=_ca_file(path, _text(_first(top, _CA_KEYS))),
    )


def _ca_file(credentials_file: Path, named: str | None) -> str | None:
    # `serve --demo --tls` writes the CA it made; a relative path is relative to the file.
    if not named:
        return None
    path = Path(named)
    return str(path if path.is_absolute() else credentials_file.parent / path)


def _choose_client(top: Mapping[str, Any], client_id: str | None) -> dict[str, Any] | None:
    candidates: list[dict[str, Any]] = []
    listed = _first(top, _CLIENT_LIST_KEYS)
    if isinstance(listed, Mapping):
        # {"automation": {...}, "reader": {...}}: the key is a name, or the client id itself.
        for key, value in listed.items():
            if isinstance(value, Mapping):
                entry = _normalised(value)
                entry.setdefault("name", key)
                candidates.append(entry)
            elif isinstance(value, str):
                candidates.append({"clientid": key, "clientsecret": value})
    elif isinstance(listed, list):
        candidates.extend(_normalised(item) for item in listed if isinstance(item, Mapping))
    if _first(top, ("clientid", "appid", "applicationid")):
        candidates.insert(0, top)  # type: ignore[arg-type]
    candidates = [c for c in candidates if _first(c, _CLIENT_ID_KEYS) and _first(c, _CLIENT_SECRET_KEYS)]
    if not candidates:
        return None
    if client_id:
        for candidate in candidates:
            if _text(_first(candidate, _CLIENT_ID_KEYS)) == client_id:
                return candidate
        raise ConfigurationError(f"The credentials file lists no client with id {client_id}")
    for candidate in candidates:
        roles = _first(candidate, _ROLE_KEYS) or []
        if isinstance(roles, str):
            roles = roles.split()
        if any(str(role).lower() == _PREFERRED_ROLE for role in roles):
            return candidate
    return candidates[0]


def _split_authority(authority: str, tenant_id: str | None) -> tuple[str, str | None]:
    """The authority base URL, given a base, `{base}/{tenant}` or a full token URL."""
    parts = urlsplit(authority)
    path = _TOKEN_PATH.sub("", parts.path.rstrip("/"))
    segments = [segment for segment in path.split("/") if segment]
    tenant_in_url = None
    if segments and (segments[-1] == tenant_id or (tenant_id is None and _looks_like_tenant(segments[-1]))):
        tenant_in_url = segments.pop()
    base = urlunsplit((parts.scheme, parts.netloc, "/".join(["", *segments]) if segments else "", "", ""))
    return base.rstrip("/"), tenant_in_url


def _looks_like_tenant(segment: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-fA-F-]{32,36}", segment)) or segment.endswith(".onmicrosoft.com")
