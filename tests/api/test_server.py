"""The API's server: where it listens (TLS, unix socket, plain HTTP only on loopback),
its self-hosted documentation, and /metrics."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from stasis.api.app import create_app
from stasis.api.context import ApiContext
from stasis.api.server import ApiServer
from stasis.app.auth import Tenant
from stasis.app.listen import Listen, Tls, check_plain_http, parse_listen
from stasis.catalog import JobStore
from stasis.errors import UsageError


def self_signed(tmp: Path) -> Tls:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (tmp / "key.pem").chmod(0o600)
    return Tls(tmp / "cert.pem", tmp / "key.pem")


@pytest.mark.parametrize(("text", "listen"), [
    ("127.0.0.1:8080", Listen("127.0.0.1", 8080)),
    ("[::1]:9", Listen("::1", 9)),
    ("0.0.0.0:8443", Listen("0.0.0.0", 8443)),
    ("unix:/run/stasis/api.sock", Listen(socket=Path("/run/stasis/api.sock"))),
])
def test_listen_forms(text: str, listen: Listen) -> None:
    assert parse_listen(text) == listen


@pytest.mark.parametrize("text", ["8080", "host:", ":80", "h:99999", "unix:relative.sock"])
def test_bad_listen_forms_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="nothing was started"):
        parse_listen(text)


def test_plain_http_only_on_loopback_unless_asked(tmp_path: Path) -> None:
    check_plain_http(parse_listen("127.0.0.1:1"), None, False)
    check_plain_http(parse_listen("[::1]:1"), None, False)
    check_plain_http(parse_listen("unix:/tmp/x.sock"), None, False)
    with pytest.raises(UsageError, match="plain HTTP"):
        check_plain_http(parse_listen("0.0.0.0:1"), None, False)
    check_plain_http(parse_listen("0.0.0.0:1"), None, True)
    check_plain_http(parse_listen("0.0.0.0:1"), self_signed(tmp_path), False)


def test_it_serves_tls_with_the_given_certificate(api_ctx: ApiContext,
                                                  tmp_path: Path) -> None:
    tls = self_signed(tmp_path)
    server = ApiServer(create_app(api_ctx), Listen("127.0.0.1", 0), tls)
    server.start()
    try:
        verify = ssl.create_default_context(cafile=str(tls.certificate))
        r = httpx.get(f"https://127.0.0.1:{server.port}/api/v1/openapi.json", verify=verify)
        assert r.status_code == 200 and r.json()["info"]["title"] == "Stasis"
        with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port gets nothing
            httpx.get(f"http://127.0.0.1:{server.port}/api/v1/openapi.json", timeout=5)
    finally:
        server.stop()
    with pytest.raises(OSError):  # stopped: nothing listens any more
        socket.create_connection(("127.0.0.1", server.port or 1), timeout=1).close()


def test_it_serves_a_unix_socket(api_ctx: ApiContext, tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    server = ApiServer(create_app(api_ctx), Listen(socket=path))
    server.start()
    try:
        assert path.is_socket() and path.stat().st_mode & 0o777 == 0o660
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as c:
            r = c.get("http://stasis/api/v1/me")
        assert r.status_code == 401  # no token: the guard answers through the socket too
    finally:
        server.stop()


def test_a_port_in_use_is_a_clear_error(api_ctx: ApiContext) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = ApiServer(create_app(api_ctx), Listen("127.0.0.1", taken.getsockname()[1]))
        with pytest.raises(UsageError, match="could not listen"):
            server.start()


def test_the_docs_need_nothing_from_outside(client: Callable[..., TestClient]) -> None:
    c = client(None)
    for page in ("/api/v1/docs", "/api/v1/redoc"):
        html = c.get(page)
        assert html.status_code == 200
        assert "/api/v1/openapi.json" in html.text
        assert "https://" not in html.text and "http://" not in html.text, page
    assert c.get("/api/v1/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert c.get("/api/v1/docs-assets/redoc.standalone.js").status_code == 200


def test_metrics_report_jobs_vms_and_repositories(client: Callable[..., TestClient],
                                                  api_ctx: ApiContext) -> None:
    jobs = JobStore(api_ctx.catalog)
    ok = jobs.create("backup", "web1", vms=["web1"], state="running")
    jobs.finish(ok.id, "succeeded", bytes_read=1000, bytes_written=300)
    bad = jobs.create("backup", "db1", vms=["db1"], state="running")
    jobs.finish(bad.id, "failed", error="boom", exit_code=1)
    text = client("auditor").get("/metrics")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    body = text.text
    assert 'stasis_jobs_total{kind="backup",state="succeeded"} 1.0' in body
    assert 'stasis_jobs_total{kind="backup",state="failed"} 1.0' in body
    assert 'stasis_job_duration_seconds_count{kind="backup",state="succeeded"} 1.0' in body
    assert 'stasis_job_read_bytes_total{kind="backup"} 1000.0' in body
    assert 'stasis_job_written_bytes_total{kind="backup"} 300.0' in body
    assert 'stasis_repository_points{repository="main"} 0.0' in body
    # a tenant's auditor sees its own VMs' jobs only, and no shared repository
    mine = client("auditor", Tenant("acme", vms=frozenset({"web1"}))).get("/metrics").text
    assert 'state="succeeded"} 1.0' in mine and 'state="failed"' not in mine
    assert "stasis_repository" not in mine
    # a viewer lacks metrics:read
    denied = client("viewer").get("/metrics")
    assert denied.status_code == 403 and denied.json()["permission"] == "metrics:read"


def test_a_unix_socket_path_the_kernel_cannot_hold_is_refused() -> None:
    long = "/tmp/" + "d" * 100 + "/api.sock"
    with pytest.raises(UsageError, match="at most 107 bytes"):
        parse_listen(f"unix:{long}")
