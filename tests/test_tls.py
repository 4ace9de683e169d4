"""Who gets in over TLS: both clients and the CLI with ``ClientTLS`` / ``--ca --cert --key``,
mutual TLS refusing clients without the right certificate (with an error that says why), and
``ctx.identity`` from a verified client certificate. Certificates are made by trustme per run;
every test talks to a real server over a real TLS channel."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from cryptography import x509

from grpc_serverfn import (
    AsyncClient,
    Client,
    ClientTLS,
    Context,
    Identity,
    Registry,
    ServerTLS,
    Unauthenticated,
    Unavailable,
    bearer_auth,
)
from grpc_serverfn.cli import main
from grpc_serverfn.testing import RunningServer, run_in_thread
from tests.processes import PROMPTLY, run_cli, serving

CHUNKS = 500
# The tests dial 127.0.0.1, which the server certificate names: "localhost" may resolve to ::1
# too, and grpc reports only the last address's error (often a refused ::1).
CLIENT_NAME = "billing client"
TOKENS = {"s3cret": Identity("token-user", roles=frozenset({"admin"}))}


# --- certificates ---


@pytest.fixture(scope="module")
def server_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(server_ca: trustme.CA) -> trustme.LeafCert:
    return server_ca.issue_cert("localhost", "127.0.0.1")


@pytest.fixture(scope="module")
def client_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def client_cert(client_ca: trustme.CA) -> trustme.LeafCert:
    return client_ca.issue_cert("billing.example", common_name=CLIENT_NAME)


@pytest.fixture(scope="module")
def foreign_cert() -> trustme.LeafCert:
    """Same names as ``client_cert``, signed by a CA the server does not trust."""
    return trustme.CA().issue_cert("billing.example", common_name=CLIENT_NAME)


def pem_chain(cert: trustme.LeafCert) -> bytes:
    return b"".join(blob.bytes() for blob in cert.cert_chain_pems)


def server_tls(cert: trustme.LeafCert, client_ca: trustme.CA | None = None) -> ServerTLS:
    return ServerTLS(
        pem_chain(cert),
        cert.private_key_pem.bytes(),
        client_ca.cert_pem.bytes() if client_ca is not None else None,
    )


def client_tls(ca: trustme.CA, cert: trustme.LeafCert | None = None) -> ClientTLS:
    if cert is None:
        return ClientTLS(ca=ca.cert_pem.bytes())
    return ClientTLS(
        ca=ca.cert_pem.bytes(),
        certificate_chain=pem_chain(cert),
        private_key=cert.private_key_pem.bytes(),
    )


def subject_of(cert: trustme.LeafCert) -> str:
    """The certificate's subject as cryptography spells it (RFC 4514, most specific first)."""
    return x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes()).subject.rfc4514_string()


# --- the served functions ---


class Calls:
    """How many times the handlers ran: a refused client must not reach them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def add(self) -> None:
        with self._lock:
            self.count += 1


def tls_registry(calls: Calls, *, middleware: list[Any] | None = None) -> Registry:
    registry = Registry(middleware=middleware or [])

    @registry.server_fn
    async def count(data: int) -> AsyncIterator[dict[str, int]]:
        calls.add()
        for i in range(data):
            yield {"i": i}

    @registry.server_fn
    def whoami(ctx: Context) -> dict[str, Any] | None:
        # A sync handler: the identity is looked up from its worker thread.
        calls.add()
        identity = ctx.identity
        if identity is None:
            return None
        return {"subject": identity.subject, "claims": dict(identity.claims)}

    @registry.server_fn
    async def whoami_async(ctx: Context) -> str | None:
        calls.add()
        return ctx.identity.subject if ctx.identity is not None else None

    return registry


@pytest.fixture(scope="module")
def tls_server(server_cert: trustme.LeafCert) -> Iterator[tuple[RunningServer, Calls]]:
    """TLS without client certificates."""
    calls = Calls()
    with run_in_thread(tls_registry(calls), tls=server_tls(server_cert)) as running:
        yield running, calls


@pytest.fixture(scope="module")
def mtls_server(
    server_cert: trustme.LeafCert, client_ca: trustme.CA
) -> Iterator[tuple[RunningServer, Calls]]:
    """Mutual TLS: clients must present a certificate ``client_ca`` signed."""
    calls = Calls()
    with run_in_thread(tls_registry(calls), tls=server_tls(server_cert, client_ca)) as running:
        yield running, calls


def expected_chunks() -> list[dict[str, int]]:
    return [{"i": i} for i in range(CHUNKS)]


async def async_chunks(client: AsyncClient, function: str, data: Any = None) -> list[Any]:
    return [chunk async for chunk in client.invoke(function, data)]


# --- TLS ---


@pytest.mark.parametrize("coalesce", [True, False])
def test_the_sync_client_streams_chunks_over_tls(
    tls_server: tuple[RunningServer, Calls], server_ca: trustme.CA, coalesce: bool
) -> None:
    running, _ = tls_server
    tls = client_tls(server_ca)
    with Client(running.target, tls=tls, timeout=PROMPTLY, coalesce=coalesce) as client:
        assert list(client.invoke("count", CHUNKS)) == expected_chunks()
        # Without a verified client certificate nobody is identified.
        assert client.call("whoami") is None


@pytest.mark.parametrize("coalesce", [True, False])
async def test_the_async_client_streams_chunks_over_tls(
    tls_server: tuple[RunningServer, Calls], server_ca: trustme.CA, coalesce: bool
) -> None:
    running, _ = tls_server
    tls = client_tls(server_ca)
    async with AsyncClient(running.target, tls=tls, timeout=PROMPTLY, coalesce=coalesce) as client:
        assert await async_chunks(client, "count", CHUNKS) == expected_chunks()
        assert await client.call("whoami_async") is None


def test_a_certificate_sent_to_a_server_that_does_not_verify_them_identifies_nobody(
    tls_server: tuple[RunningServer, Calls], server_ca: trustme.CA, foreign_cert: trustme.LeafCert
) -> None:
    # A server without a client CA neither asks for nor checks certificates: an unverified
    # certificate must never become ctx.identity.
    running, _ = tls_server
    tls = client_tls(server_ca, foreign_cert)
    with Client(running.target, tls=tls, timeout=PROMPTLY) as client:
        assert client.call("whoami") is None
        assert client.call("whoami_async") is None


def test_a_client_that_does_not_trust_the_server_is_refused_with_a_hint_at_the_ca(
    tls_server: tuple[RunningServer, Calls],
) -> None:
    running, _ = tls_server
    stranger = ClientTLS(ca=trustme.CA().cert_pem.bytes())
    with (
        Client(running.target, tls=stranger, timeout=PROMPTLY) as client,
        pytest.raises(Unavailable) as refused,
    ):
        client.call("whoami")
    assert "not signed by a CA this client trusts" in refused.value.message
    assert "--ca" in refused.value.message


def test_a_plaintext_client_and_a_tls_server_are_told_apart(
    tls_server: tuple[RunningServer, Calls], server_ca: trustme.CA
) -> None:
    running, _ = tls_server
    with (
        Client(running.target, timeout=PROMPTLY) as client,
        pytest.raises(Unavailable) as refused,
    ):
        client.call("whoami")
    assert "connect with TLS" in refused.value.message
    calls = Calls()
    with (
        run_in_thread(tls_registry(calls)) as plaintext,
        Client(plaintext.target, tls=client_tls(server_ca), timeout=PROMPTLY) as client,
        pytest.raises(Unavailable) as refused,
    ):
        client.call("whoami")
    assert "does not speak TLS" in refused.value.message
    assert calls.count == 0


@pytest.fixture(scope="module")
def named_server(server_ca: trustme.CA) -> Iterator[RunningServer]:
    """TLS with a certificate for server.example only: not the name the tests dial."""
    cert = server_ca.issue_cert("server.example")
    with run_in_thread(tls_registry(Calls()), tls=server_tls(cert)) as running:
        yield running


def test_server_name_checks_the_certificate_against_another_name(
    named_server: RunningServer, server_ca: trustme.CA
) -> None:
    target = named_server.target
    with (
        Client(target, tls=client_tls(server_ca), timeout=PROMPTLY) as client,
        pytest.raises(Unavailable) as refused,
    ):
        client.call("whoami")
    assert "does not hold the name dialled" in refused.value.message
    assert "server_name" in refused.value.message
    tls = ClientTLS(ca=server_ca.cert_pem.bytes(), server_name="server.example")
    with Client(target, tls=tls, timeout=PROMPTLY) as client:
        assert client.call("whoami") is None


async def test_server_name_works_for_the_async_client_too(
    named_server: RunningServer, server_ca: trustme.CA
) -> None:
    tls = ClientTLS(ca=server_ca.cert_pem.bytes(), server_name="server.example")
    async with AsyncClient(named_server.target, tls=tls, timeout=PROMPTLY) as client:
        assert await async_chunks(client, "count", 3) == [{"i": 0}, {"i": 1}, {"i": 2}]
    async with AsyncClient(
        named_server.target, tls=client_tls(server_ca), timeout=PROMPTLY
    ) as client:
        with pytest.raises(Unavailable, match="server_name"):
            await client.call("whoami_async")


def test_client_tls_refuses_half_a_certificate_and_both_tls_and_credentials(
    server_ca: trustme.CA, client_cert: trustme.LeafCert
) -> None:
    with pytest.raises(ValueError, match="both certificate_chain and private_key"):
        ClientTLS(ca=server_ca.cert_pem.bytes(), certificate_chain=pem_chain(client_cert))
    with pytest.raises(ValueError, match="not both"):
        Client(
            "localhost:1",
            tls=client_tls(server_ca),
            credentials=grpc.ssl_channel_credentials(server_ca.cert_pem.bytes()),
        )
    # The private key stays out of reprs (and so out of logs).
    key = client_cert.private_key_pem.bytes()
    assert key.decode() not in repr(client_tls(server_ca, client_cert))


def test_client_tls_from_files_reads_the_pem_files(
    tmp_path: Path,
    mtls_server: tuple[RunningServer, Calls],
    server_ca: trustme.CA,
    client_cert: trustme.LeafCert,
) -> None:
    running, _ = mtls_server
    paths = write_pems(tmp_path, server_ca, client_cert)
    tls = ClientTLS.from_files(paths["ca"], paths["cert"], paths["key"])
    with Client(running.target, tls=tls, timeout=PROMPTLY) as client:
        assert client.call("whoami_async") == subject_of(client_cert)


# --- mutual TLS ---


def test_mutual_tls_refuses_a_client_without_a_certificate(
    mtls_server: tuple[RunningServer, Calls], server_ca: trustme.CA
) -> None:
    running, calls = mtls_server
    before = calls.count
    with (
        Client(running.target, tls=client_tls(server_ca), timeout=PROMPTLY) as client,
        pytest.raises(Unavailable) as refused,
    ):
        list(client.invoke("count", 3))
    message = refused.value.message
    assert message.startswith(f"cannot connect to {running.target}:")
    assert "requires mutual TLS" in message
    assert "without a certificate" in message
    assert "--cert" in message
    assert calls.count == before


async def test_mutual_tls_refuses_an_async_client_without_a_certificate(
    mtls_server: tuple[RunningServer, Calls], server_ca: trustme.CA
) -> None:
    running, calls = mtls_server
    before = calls.count
    async with AsyncClient(running.target, tls=client_tls(server_ca), timeout=PROMPTLY) as c:
        with pytest.raises(Unavailable, match="without a certificate"):
            await async_chunks(c, "count", 3)
        with pytest.raises(Unavailable, match="without a certificate"):
            await c.functions()
    assert calls.count == before


def test_mutual_tls_refuses_a_certificate_from_another_ca(
    mtls_server: tuple[RunningServer, Calls], server_ca: trustme.CA, foreign_cert: trustme.LeafCert
) -> None:
    running, calls = mtls_server
    before = calls.count
    tls = client_tls(server_ca, foreign_cert)
    with (
        Client(running.target, tls=tls, timeout=PROMPTLY) as client,
        pytest.raises(Unavailable) as refused,
    ):
        client.call("whoami")
    assert "does not accept the client certificate" in refused.value.message
    assert calls.count == before


async def test_mutual_tls_refuses_an_async_client_with_a_certificate_from_another_ca(
    mtls_server: tuple[RunningServer, Calls], server_ca: trustme.CA, foreign_cert: trustme.LeafCert
) -> None:
    running, calls = mtls_server
    before = calls.count
    tls = client_tls(server_ca, foreign_cert)
    async with AsyncClient(running.target, tls=tls, timeout=PROMPTLY) as client:
        with pytest.raises(Unavailable, match="does not accept the client certificate"):
            await client.call("whoami_async")
    assert calls.count == before


def test_mutual_tls_admits_the_right_certificate_and_names_its_subject(
    mtls_server: tuple[RunningServer, Calls],
    server_ca: trustme.CA,
    client_cert: trustme.LeafCert,
) -> None:
    running, _ = mtls_server
    tls = client_tls(server_ca, client_cert)
    with Client(running.target, tls=tls, timeout=PROMPTLY) as client:
        assert list(client.invoke("count", CHUNKS)) == expected_chunks()
        me = client.call("whoami")
    assert me["subject"] == subject_of(client_cert)
    assert me["subject"].startswith(f"CN={CLIENT_NAME},")
    assert me["claims"]["common_name"] == CLIENT_NAME
    assert me["claims"]["subject_alternative_names"] == ["billing.example"]
    assert me["claims"]["certificate_pem"] == client_cert.cert_chain_pems[0].bytes().decode()


async def test_mutual_tls_admits_an_async_client_with_the_right_certificate(
    mtls_server: tuple[RunningServer, Calls],
    server_ca: trustme.CA,
    client_cert: trustme.LeafCert,
) -> None:
    running, _ = mtls_server
    tls = client_tls(server_ca, client_cert)
    async with AsyncClient(running.target, tls=tls, timeout=PROMPTLY) as client:
        assert await async_chunks(client, "count", CHUNKS) == expected_chunks()
        assert await client.call("whoami_async") == subject_of(client_cert)
        assert (await client.call("whoami"))["subject"] == subject_of(client_cert)


def test_a_bearer_token_identity_wins_over_the_certificate(
    server_cert: trustme.LeafCert,
    server_ca: trustme.CA,
    client_ca: trustme.CA,
    client_cert: trustme.LeafCert,
) -> None:
    auth = bearer_auth(TOKENS.get, public={"whoami_async"})
    registry = tls_registry(Calls(), middleware=[auth])
    with (
        run_in_thread(registry, tls=server_tls(server_cert, client_ca)) as running,
        Client(running.target, tls=client_tls(server_ca, client_cert), timeout=PROMPTLY) as client,
    ):
        token = {"authorization": "Bearer s3cret"}
        # A function the middleware checks: the token's identity, not the certificate's.
        assert client.call("whoami", metadata=token)["subject"] == "token-user"
        # A certificate does not stand in for the token the middleware requires.
        with pytest.raises(Unauthenticated):
            client.call("whoami")
        # A public function: the middleware sets nothing, so the certificate names the caller.
        assert client.call("whoami_async", metadata=token) == subject_of(client_cert)


# --- the command line ---


def write_pems(
    directory: Path, ca: trustme.CA, cert: trustme.LeafCert, prefix: str = ""
) -> dict[str, Path]:
    paths = {
        "ca": directory / f"{prefix}ca.pem",
        "cert": directory / f"{prefix}cert.pem",
        "key": directory / f"{prefix}key.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    paths["cert"].write_bytes(pem_chain(cert))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    return paths


cli = run_cli


def test_the_cli_calls_lists_and_checks_a_mutual_tls_server_process(
    tmp_path: Path,
    server_ca: trustme.CA,
    server_cert: trustme.LeafCert,
    client_ca: trustme.CA,
    client_cert: trustme.LeafCert,
    foreign_cert: trustme.LeafCert,
) -> None:
    served = write_pems(tmp_path, client_ca, server_cert, prefix="server-")
    mine = write_pems(tmp_path, server_ca, client_cert)
    foreign = write_pems(tmp_path, server_ca, foreign_cert, prefix="foreign-")
    with serving(
        "tests.app:fns",
        "--port",
        "0",
        "--tls-cert",
        str(served["cert"]),
        "--tls-key",
        str(served["key"]),
        "--tls-client-ca",
        str(served["ca"]),
    ) as server:
        address = server.wait_serving()
        assert "(TLS," in server.log
        flags = ["--ca", str(mine["ca"]), "--cert", str(mine["cert"]), "--key", str(mine["key"])]

        called = cli("call", address, "count_async", '{"n": 3}', *flags)
        assert called.returncode == 0, called.stderr
        assert called.stdout.splitlines() == ["0", "1", "2"]
        me = cli("call", address, "whoami", *flags)
        assert me.returncode == 0, me.stderr
        assert f'"subject":"{subject_of(client_cert)}"' in me.stdout
        listed = cli("list", address, *flags)
        assert listed.returncode == 0, listed.stderr
        assert "whoami" in listed.stdout
        health = cli("health", address, *flags)
        assert (health.returncode, health.stdout.strip()) == (0, "SERVING")

        # No client certificate: refused, UNAVAILABLE (64 + 14), and told what to pass.
        bare = cli("call", address, "whoami", "--ca", str(mine["ca"]))
        assert bare.returncode == 78
        assert bare.stdout == ""
        assert "UNAVAILABLE" in bare.stderr
        assert "--cert, --key" in bare.stderr
        assert "Traceback" not in bare.stderr
        # A certificate from another CA: refused too.
        foreign_flags = ["--cert", str(foreign["cert"]), "--key", str(foreign["key"])]
        other = cli("call", address, "whoami", "--ca", str(mine["ca"]), *foreign_flags)
        assert other.returncode == 78
        assert "does not accept the client certificate" in other.stderr


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI in this process (quicker than a subprocess where no server process is needed):
    exit status, stdout, stderr."""
    try:
        status = main(list(args))
    except SystemExit as exit_:  # argparse's --help and usage errors
        status = int(exit_.code or 0)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_cli_refuses_half_a_client_certificate_and_unreadable_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run_main(capsys, "call", "127.0.0.1:1", "f", "--cert", str(tmp_path / "c"))
    assert status == 2
    assert "--cert and --key go together" in err
    missing = tmp_path / "missing.pem"
    status, _, err = run_main(capsys, "health", "127.0.0.1:1", "--ca", str(missing))
    assert status == 2
    assert f"cannot read {missing}: No such file or directory" in err
    status, _, err = run_main(
        capsys, "serve", "tests.app:fns", "--tls-cert", str(missing), "--tls-key", str(missing)
    )
    assert status == 2
    assert f"cannot read {missing}: No such file or directory" in err


def test_the_cli_server_name_flag_checks_the_certificate_against_that_name(
    tmp_path: Path,
    named_server: RunningServer,
    server_ca: trustme.CA,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ca_path = tmp_path / "ca.pem"
    server_ca.cert_pem.write_to_path(str(ca_path))
    call = ("call", named_server.target, "whoami_async", "--ca", str(ca_path))
    status, out, err = run_main(capsys, *call)
    assert (status, out) == (78, "")
    assert "--server-name" in err
    status, out, err = run_main(capsys, *call, "--server-name", "server.example")
    assert (status, out) == (0, "null\n"), err


@pytest.mark.parametrize("command", ["call", "list", "health"])
def test_the_cli_help_documents_the_tls_flags(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run_main(capsys, command, "--help")
    assert status == 0
    for flag in ("--tls", "--ca FILE", "--cert FILE", "--key FILE", "--server-name NAME"):
        assert flag in out
    assert "mutual TLS" in out
