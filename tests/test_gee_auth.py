"""Earth Engine credentials: where they are looked for, what a missing or bad one says, and that no secret
(private key, token) ever reaches a message or a log line."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest
from test_gee_fakes import FakeEE

from minescan.sources.gee.auth import (
    GeeAuthError,
    RedactingFilter,
    initialize,
    load_credentials,
    redact,
    register_secret,
    resolve_auth,
)
from minescan.sources.gee.settings import HIGH_VOLUME_URL, GeeSettings

SECRET = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCSUPERSECRETKEYMATERIAL0123456789"
PEM = f"-----BEGIN PRIVATE KEY-----\n{SECRET}\nAAAABBBBCCCCDDDDEEEEFFFF00001111\n-----END PRIVATE KEY-----\n"


def sa_key(tmp_path, name="key.json", **over) -> str:
    data = {"type": "service_account", "project_id": "key-project", "private_key_id": "f" * 40,
            "private_key": PEM, "client_email": "scanner@key-project.iam.gserviceaccount.com",
            "client_id": "123", "token_uri": "https://oauth2.googleapis.com/token"}
    data.update(over)
    data = {k: v for k, v in data.items() if v is not None}
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    h.mkdir()
    return h


def env(home, **kw):
    return {"HOME": str(home), **kw}


def test_nothing_found_says_what_to_set(home):
    with pytest.raises(GeeAuthError) as err:
        resolve_auth(GeeSettings(), env(home))
    msg = str(err.value)
    assert "no Earth Engine credentials" in msg and "source.gee.service_account_key" in msg
    assert "GOOGLE_APPLICATION_CREDENTIALS" in msg and "earthengine authenticate" in msg


def test_service_account_key_and_project_precedence(tmp_path, home):
    key = sa_key(tmp_path)
    s = GeeSettings(service_account_key=key)
    a = resolve_auth(s, env(home))
    assert (a.credentials, a.key_file, a.project) == ("service_account", key, "key-project")
    assert "scanner@key-project" in a.describe()
    assert resolve_auth(s, env(home, GOOGLE_CLOUD_PROJECT="gcp")).project == "gcp"
    assert resolve_auth(s, env(home, GOOGLE_CLOUD_PROJECT="gcp", EE_PROJECT="ee")).project == "ee"
    assert resolve_auth(replace(s, project="cfg"), env(home, EE_PROJECT="ee")).project == "cfg"
    # GOOGLE_APPLICATION_CREDENTIALS is used when the config names no key
    a = resolve_auth(GeeSettings(high_volume=True), env(home, GOOGLE_APPLICATION_CREDENTIALS=key))
    assert a.credentials == "service_account" and a.key_file == key and a.high_volume


def test_no_project_says_what_to_set(tmp_path, home):
    key = sa_key(tmp_path, project_id=None)
    with pytest.raises(GeeAuthError, match="no Earth Engine project.*source.gee.project.*EE_PROJECT"):
        resolve_auth(GeeSettings(service_account_key=key), env(home))


@pytest.mark.parametrize("content,match", [
    (None, "does not exist"),
    ("{not json " + SECRET, "not a JSON credentials file"),
    (json.dumps({"type": "authorized_user", "refresh_token": "1//" + SECRET}), "not a service-account key"),
    (json.dumps({"type": "service_account", "private_key": PEM, "project_id": "p"}), "missing client_email"),
    (json.dumps({"type": "service_account", "private_key": SECRET, "client_email": "a@b", "token_uri": "t"}),
     "not a PEM key"),
])
def test_bad_key_files_are_named_without_their_secrets(tmp_path, home, content, match):
    path = tmp_path / "key.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(GeeAuthError, match=match) as err:
        resolve_auth(GeeSettings(service_account_key=str(path)), env(home))
    assert str(path) in str(err.value)
    assert SECRET not in str(err.value) and "BEGIN PRIVATE" not in str(err.value)


def test_other_credential_sources(tmp_path, home):
    ee_creds = home / ".config" / "earthengine" / "credentials"
    ee_creds.parent.mkdir(parents=True)
    ee_creds.write_text(json.dumps({"refresh_token": "1//" + SECRET, "project": "ee-auth-project"}))
    a = resolve_auth(GeeSettings(), env(home))
    assert (a.credentials, a.project) == ("earthengine", "ee-auth-project")
    adc = tmp_path / "adc.json"
    adc.write_text(json.dumps({"type": "authorized_user", "refresh_token": "x" * 20, "client_secret": "y" * 20,
                               "quota_project_id": "adc-project"}))
    a = resolve_auth(GeeSettings(), env(home, GOOGLE_APPLICATION_CREDENTIALS=str(adc)))
    assert (a.credentials, a.project, a.key_file) == ("application_default", "adc-project", str(adc))
    with pytest.raises(GeeAuthError, match="'service_account' but GOOGLE_APPLICATION_CREDENTIALS"):
        resolve_auth(GeeSettings(credentials="service_account"), env(home, GOOGLE_APPLICATION_CREDENTIALS=str(adc)))
    # application_default (e.g. a Cloud VM's metadata server) is not checked offline, but needs a project
    assert resolve_auth(GeeSettings(credentials="application_default", project="p"), env(home)).project == "p"
    with pytest.raises(GeeAuthError, match="'earthengine' but"):
        resolve_auth(GeeSettings(credentials="earthengine"), env(tmp_path / "empty-home"))


def test_initialize_passes_project_endpoint_and_credentials(tmp_path, home):
    a = resolve_auth(GeeSettings(service_account_key=sa_key(tmp_path), high_volume=True), env(home))
    ee = FakeEE()
    token = object()  # what the credentials factory makes of the resolved settings
    seen = []
    creds = initialize(a, ee, credentials_factory=lambda auth: seen.append(auth) or token)
    assert seen == [a]  # the factory is given the resolved settings (key file, project) ...
    assert ee.initialized == [{"credentials": token, "url": HIGH_VOLUME_URL, "project": "key-project"}]
    assert creds is ee.initialized[0]["credentials"]  # ... and ee.Initialize gets what it made
    a2 = replace(a, high_volume=False)
    ee2 = FakeEE()
    initialize(a2, ee2, credentials_factory=lambda auth: "CREDS")
    assert ee2.initialized[0]["url"] is None


def test_refused_credentials_never_leak_the_key(tmp_path, home, caplog):
    a = resolve_auth(GeeSettings(service_account_key=sa_key(tmp_path)), env(home))
    leak = (f"invalid_grant: Invalid JWT Signature. key={PEM!r} token ya29.a0AfH6SMBxyz-SECRET "
            f"assertion eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJzY2FubmVyIn0.c2lnbmF0dXJl")
    ee = FakeEE(init_error=RuntimeError(leak))
    with caplog.at_level(logging.DEBUG), pytest.raises(GeeAuthError) as err:
        initialize(a, ee, credentials_factory=lambda auth: "CREDS")
    msg = str(err.value)
    assert "Earth Engine refused the service-account key" in msg and "key-project" in msg
    for secret in (SECRET, "BEGIN PRIVATE", "ya29.a0AfH6", "eyJhbGciOiJSUzI1NiJ9", "AAAABBBBCCCCDDDDEEEEFFFF"):
        assert secret not in msg and secret not in caplog.text
    assert err.value.__cause__ is None and err.value.__context__ is not None  # suppressed from the traceback
    assert getattr(err.value, "__suppress_context__", False)


def test_real_key_loader_failure_is_redacted(tmp_path, home):
    """google-auth parsing a broken private key: the error we raise carries none of it."""
    a = resolve_auth(GeeSettings(service_account_key=sa_key(tmp_path)), env(home))
    with pytest.raises(GeeAuthError, match="cannot load the service-account key") as err:
        initialize(a, FakeEE(), credentials_factory=load_credentials)
    assert SECRET not in str(err.value) and "AAAABBBB" not in str(err.value)


def test_redaction_of_messages_and_log_records(caplog):
    register_secret("s3cr3t-value-registered")
    text = ('{"private_key": "-----BEGIN PRIVATE KEY-----\\nABC\\n-----END PRIVATE KEY-----\\n", '
            '"refresh_token": "1//0gAbCdEfGhIjKlMnOpQrStUv"} Authorization: Bearer ya29.tok s3cr3t-value-registered')
    clean = redact(text)
    assert "ABC" not in clean and "1//0gAb" not in clean and "ya29" not in clean and "s3cr3t" not in clean
    assert clean.count("[REDACTED]") >= 4
    logger = logging.getLogger("minescan.test.redaction")
    logger.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO, logger="minescan.test.redaction"):
        logger.info("token %s and key %s", "ya29.leaky-token", "s3cr3t-value-registered")
    assert "leaky" not in caplog.text and "s3cr3t" not in caplog.text and "[REDACTED]" in caplog.text
