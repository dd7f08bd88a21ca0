"""Earth Engine credentials for unattended (batch / HPC) runs, and keeping secrets out of every message.

Resolution (``source.gee.credentials: auto``), first found wins:

1. ``source.gee.service_account_key``: a service-account JSON key file;
2. ``GOOGLE_APPLICATION_CREDENTIALS``: a service-account key, or any other application-default file;
3. ``~/.config/earthengine/credentials`` written by ``earthengine authenticate``;
4. ``~/.config/gcloud/application_default_credentials.json`` written by
   ``gcloud auth application-default login``.

``application_default`` skips the file checks (a Google Cloud VM gets them from its metadata server).

The project is ``source.gee.project``, else ``EE_PROJECT``, else ``GOOGLE_CLOUD_PROJECT``, else the
service account's own project. :func:`resolve_auth` checks all this offline (it is run when the Snakefile
is parsed and by ``minescan gee check --offline``), so a missing or unreadable credential fails before any
job is scheduled; :func:`initialize` then calls ``ee.Initialize``.

No message, log line or output ever holds a private key or token: key files are parsed here only to check
their shape, their secret fields are registered with :func:`redact`, and every error from Google libraries
is passed through it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from minescan.errors import ConfigError

log = logging.getLogger(__name__)

SCOPES = (
    "https://www.googleapis.com/auth/earthengine",
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/devstorage.read_write",
    "https://www.googleapis.com/auth/drive",
)
ADC_TYPES = {"service_account", "authorized_user", "external_account", "impersonated_service_account",
             "external_account_authorized_user", "gdch_service_account"}
HINT = ("set source.gee.service_account_key (a service-account JSON key file) or GOOGLE_APPLICATION_CREDENTIALS, "
        "or run `earthengine authenticate` (or `gcloud auth application-default login`) once on this machine")

_SECRETS: set[str] = set()
_REDACTED = "[REDACTED]"
_SECRET_PATTERNS = [  # (pattern, replacement)
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL), _REDACTED),
    (re.compile(r"(\"?(?:private_key|private_key_id|client_secret|refresh_token|access_token|id_token)\"?\s*[:=]\s*)"
                r"(\"[^\"]*\"|'[^']*'|[^\s,}]+)", re.IGNORECASE), r"\1" + _REDACTED),
    (re.compile(r"\bya29\.[\w\-.~+/]+"), _REDACTED),  # OAuth access tokens
    (re.compile(r"\b1//[\w\-.~+/]{20,}"), _REDACTED),  # OAuth refresh tokens
    (re.compile(r"(Bearer\s+)[\w\-.~+/=]+", re.IGNORECASE), r"\1" + _REDACTED),
    (re.compile(r"\beyJ[\w\-]{10,}\.[\w\-]{10,}\.[\w\-]*"), _REDACTED),  # JWTs (signed assertions)
]


def register_secret(value: str | None) -> None:
    """Never show ``value`` (nor any line of it, as a PEM key's lines) in a message."""
    if not value or len(value) < 8:
        return
    _SECRETS.add(value)
    _SECRETS.add(value.replace("\n", "\\n"))  # as it appears inside JSON or repr() text
    for line in value.splitlines():
        line = line.strip()
        if len(line) >= 16 and not line.startswith("-----"):
            _SECRETS.add(line)


def redact(text: str) -> str:
    """``text`` with every registered secret and anything shaped like a key or token replaced by [REDACTED]."""
    text = str(text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, _REDACTED)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record (installed on the handlers by the gee CLI commands)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose args do not fit its format: leave it to the handler
            return True
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        return True


def install_log_redaction() -> None:
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


class GeeAuthError(ConfigError):
    """Credentials or project missing, unreadable or refused (the message says what to set)."""


@dataclass(frozen=True)
class AuthSettings:
    project: str | None
    credentials: str  # service_account | application_default | earthengine
    key_file: str | None = None
    client_email: str | None = None
    high_volume: bool = False

    def describe(self) -> str:
        """Where the credentials come from, for messages (names and paths only)."""
        if self.credentials == "service_account":
            who = f" ({self.client_email})" if self.client_email else ""
            return f"service-account key {self.key_file}{who}"
        if self.credentials == "application_default":
            return f"application default credentials{f' ({self.key_file})' if self.key_file else ''}"
        return "Earth Engine credentials of `earthengine authenticate`"


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise GeeAuthError(f"{what}: {path} does not exist; {HINT}")
    try:
        text = path.read_text()
    except OSError as exc:
        raise GeeAuthError(f"{what}: {path} cannot be read ({type(exc).__name__}); check its permissions") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise GeeAuthError(f"{what}: {path} is not a JSON credentials file") from None
    finally:
        del text
    if not isinstance(data, dict):
        raise GeeAuthError(f"{what}: {path} is not a JSON credentials file")
    for key in ("private_key", "private_key_id", "client_secret", "refresh_token"):
        register_secret(data.get(key) if isinstance(data.get(key), str) else None)
    return data


def _check_service_account(path: Path, what: str) -> dict:
    data = _read_json(path, what)
    if data.get("type") != "service_account":
        raise GeeAuthError(f"{what}: {path} is not a service-account key (its 'type' is "
                           f"{data.get('type')!r}, expected 'service_account')")
    missing = [k for k in ("client_email", "private_key", "token_uri") if not data.get(k)]
    if missing:
        raise GeeAuthError(f"{what}: {path} is not a complete service-account key (missing "
                           f"{', '.join(missing)}); download a new JSON key for the service account")
    if not str(data["private_key"]).lstrip().startswith("-----BEGIN"):
        raise GeeAuthError(f"{what}: {path}: its private_key is not a PEM key; download a new JSON key")
    return data


def _home(env) -> Path:
    return Path(env.get("HOME") or Path.home())


def earthengine_credentials_path(env) -> Path:
    return _home(env) / ".config" / "earthengine" / "credentials"


def gcloud_adc_path(env) -> Path:
    if env.get("CLOUDSDK_CONFIG"):
        return Path(env["CLOUDSDK_CONFIG"]) / "application_default_credentials.json"
    return _home(env) / ".config" / "gcloud" / "application_default_credentials.json"


def resolve_auth(settings, env=None) -> AuthSettings:
    """Find the credentials and project without network; raise GeeAuthError saying what to set."""
    env = os.environ if env is None else env
    mode = settings.credentials
    key_cfg = settings.service_account_key
    gac = env.get("GOOGLE_APPLICATION_CREDENTIALS") or None
    project = settings.project or env.get("EE_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT") or None
    auth: AuthSettings | None = None

    if mode in ("auto", "service_account") and key_cfg:
        data = _check_service_account(Path(key_cfg).expanduser(), "key 'source.gee.service_account_key'")
        auth = AuthSettings(project or data.get("project_id"), "service_account", str(Path(key_cfg).expanduser()),
                            data.get("client_email"))
    elif mode in ("auto", "service_account", "application_default") and gac:
        path = Path(gac).expanduser()
        data = _read_json(path, "environment GOOGLE_APPLICATION_CREDENTIALS")
        kind = data.get("type")
        if kind == "service_account":
            data = _check_service_account(path, "environment GOOGLE_APPLICATION_CREDENTIALS")
            auth = AuthSettings(project or data.get("project_id"), "service_account", str(path),
                                data.get("client_email"))
        elif mode == "service_account":
            raise GeeAuthError(f"source.gee.credentials is 'service_account' but GOOGLE_APPLICATION_CREDENTIALS "
                               f"({path}) is of type {kind!r}; set source.gee.service_account_key")
        elif kind in ADC_TYPES:
            auth = AuthSettings(project or data.get("quota_project_id"), "application_default", str(path))
        else:
            raise GeeAuthError(f"environment GOOGLE_APPLICATION_CREDENTIALS: {path} is not a Google credentials "
                               f"file (type {kind!r})")
    elif mode == "service_account":
        raise GeeAuthError("source.gee.credentials is 'service_account' but no key is given: set "
                           "source.gee.service_account_key or GOOGLE_APPLICATION_CREDENTIALS to the JSON key file")
    elif mode == "application_default":
        auth = AuthSettings(project, "application_default")
    elif mode in ("auto", "earthengine") and earthengine_credentials_path(env).is_file():
        data = _read_json(earthengine_credentials_path(env), "earthengine credentials")
        if not data.get("refresh_token"):
            raise GeeAuthError(f"{earthengine_credentials_path(env)} holds no refresh token; run "
                               "`earthengine authenticate` again")
        auth = AuthSettings(project or data.get("project"), "earthengine")
    elif mode == "earthengine":
        raise GeeAuthError(f"source.gee.credentials is 'earthengine' but {earthengine_credentials_path(env)} does "
                           "not exist; run `earthengine authenticate`")
    elif gcloud_adc_path(env).is_file():
        data = _read_json(gcloud_adc_path(env), "gcloud application default credentials")
        auth = AuthSettings(project or data.get("quota_project_id"), "application_default",
                            str(gcloud_adc_path(env)))
    if auth is None:
        raise GeeAuthError(f"no Earth Engine credentials found: {HINT}")
    if not auth.project:
        raise GeeAuthError(f"no Earth Engine project for {auth.describe()}: set source.gee.project in the config "
                           "or the EE_PROJECT environment variable to a Google Cloud project registered for "
                           "Earth Engine")
    return AuthSettings(auth.project, auth.credentials, auth.key_file, auth.client_email, settings.high_volume)


def load_credentials(auth: AuthSettings):
    """google-auth credentials for ``auth`` (or the string 'persistent' for earthengine credentials)."""
    if auth.credentials == "service_account":
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_file(auth.key_file, scopes=list(SCOPES))
    if auth.credentials == "application_default":
        import google.auth

        creds, _ = google.auth.default(scopes=list(SCOPES))
        return creds
    return "persistent"


def initialize(auth: AuthSettings, ee=None, credentials_factory=None):
    """``ee.Initialize`` with these credentials, project and endpoint; return the credentials object.

    Any failure becomes a GeeAuthError whose text has passed through :func:`redact`.
    """
    from minescan.sources.gee import get_ee
    from minescan.sources.gee.settings import HIGH_VOLUME_URL

    ee = ee or get_ee()
    try:
        creds = (credentials_factory or load_credentials)(auth)
    except Exception as exc:
        raise GeeAuthError(f"cannot load the {auth.describe()}: {redact(_first_line(exc))}; {HINT}") from None
    try:
        ee.Initialize(credentials=creds, project=auth.project, url=HIGH_VOLUME_URL if auth.high_volume else None)
    except Exception as exc:
        if is_network_error(exc):
            raise GeeAuthError(
                f"cannot reach Earth Engine (network error: {redact(_first_line(exc))}); check this "
                "machine's network, DNS and proxy settings (HTTPS_PROXY); the credentials were not checked"
            ) from None
        raise GeeAuthError(
            f"Earth Engine refused the {auth.describe()} for project '{auth.project}': {redact(_first_line(exc))}. "
            "Check that the project is registered for Earth Engine, that the Earth Engine API is enabled in it "
            "and that the account has the roles 'Earth Engine Resource Viewer' and 'Service Usage Consumer' there"
        ) from None
    log.info("Earth Engine initialised: project %s, %s%s", auth.project, auth.describe(),
             ", high-volume endpoint" if auth.high_volume else "")
    return creds


_NETWORK_TYPES = {"TransportError", "ServerNotFoundError", "NameResolutionError", "NewConnectionError",
                  "ConnectTimeoutError", "MaxRetryError", "ConnectionError", "ConnectTimeout", "ProxyError",
                  "gaierror", "ConnectionRefusedError", "ConnectionResetError", "TimeoutError", "timeout"}
_NETWORK_TEXT = re.compile(r"name or service not known|temporary failure in name resolution|"
                           r"failed to resolve|nodename nor servname|unable to find the server|"
                           r"failed to establish a new connection|network is unreachable|connection refused|"
                           r"timed out|no route to host", re.IGNORECASE)


def is_network_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a network failure (DNS, connection, timeout)
    rather than a refusal by the server: google-auth wraps these in a TransportError, httplib2 in a
    ServerNotFoundError, requests/urllib3 in ConnectionError/MaxRetryError."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ConnectionError | TimeoutError) or type(exc).__name__ in _NETWORK_TYPES:
            return True
        if _NETWORK_TEXT.search(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _first_line(exc: BaseException, limit: int = 400) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."
