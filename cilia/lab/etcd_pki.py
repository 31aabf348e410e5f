"""Certificates for the lab's etcd: mutual TLS, the way etcd is run for Kubernetes.

:func:`ensure` makes, with the ``openssl`` command, in a directory only root can enter (0700; keys
0600, certificates 0644):

* ``ca.crt``/``ca.key``: the lab's own CA (EC P-256, 10 years), which signs the other two and is
  the only CA etcd and its clients trust;
* ``server.crt``/``server.key``: etcd's serving and peer certificate (server and client auth),
  valid for :data:`SERVER_NAME`, ``localhost``, 127.0.0.1 and the underlay bridge address the agents
  in node namespaces dial;
* ``client.crt``/``client.key``: the certificate of the agents and the CLI (client auth only).

etcd runs with ``--client-cert-auth`` and ``--peer-client-cert-auth``: a client without a
certificate signed by this CA is refused at the TLS handshake, so no local user who cannot read
the keys can read or write the store.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cilia.lab.errors import LabError

SERVER_NAME = "cilia-etcd"  # the name clients check the server's certificate against
DAYS = 3650
SERVER_IPS = ("127.0.0.1", "198.18.254.254")  # loopback, the underlay bridge (nodes_lab.BRIDGE_ADDRESS)


@dataclass(frozen=True)
class EtcdPki:
    """The files of one lab's etcd PKI."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.crt"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"

    def complete(self) -> bool:
        return all(p.exists() for p in (self.ca, self.server_cert, self.server_key, self.client_cert,
                                        self.client_key))

    def client_tls(self) -> tuple[str, str, str]:
        """(CA, client certificate, client key) paths, as the store's etcd backend takes them."""
        return str(self.ca), str(self.client_cert), str(self.client_key)


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise LabError("openssl not found: apt-get install -y openssl (the lab's etcd certificates)")
    proc = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60)
    if proc.returncode != 0:
        raise LabError(f"openssl {args[0]}: {proc.stderr.strip()[-500:]}")


def _issue(tmp: Path, name: str, subject: str, ext: str) -> None:
    (tmp / f"{name}.ext").write_text(ext)
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=tmp)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", str(DAYS), "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=tmp)


def ensure(directory: Path) -> EtcdPki:
    """The PKI in ``directory``, made if it is not complete (made whole in a private temporary
    directory, then moved in: never half a PKI). The directory is (made) 0700."""
    pki = EtcdPki(Path(directory))
    pki.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(pki.directory, 0o700)
    if pki.complete():
        return pki
    old_umask = os.umask(0o077)
    try:
        with tempfile.TemporaryDirectory(dir=pki.directory, prefix=".new-") as t:
            tmp = Path(t)
            _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                     "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", str(DAYS), "-sha256",
                     "-subj", "/O=cilia lab/CN=cilia lab etcd CA",
                     "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=tmp)
            sans = ",".join([f"DNS:{SERVER_NAME}", "DNS:localhost", *(f"IP:{ip}" for ip in SERVER_IPS)])
            _issue(tmp, "server", f"/O=cilia lab/CN={SERVER_NAME}",
                   "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                   f"extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={sans}\n")
            _issue(tmp, "client", "/O=cilia lab/CN=cilia-agent",
                   "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=clientAuth\n")
            for name in ("ca", "server", "client"):
                os.chmod(tmp / f"{name}.key", 0o600)
                os.chmod(tmp / f"{name}.crt", 0o644)
                os.replace(tmp / f"{name}.key", pki.directory / f"{name}.key")
            for name in ("server", "client", "ca"):  # ca.crt last: complete() holds only when all are in
                os.replace(tmp / f"{name}.crt", pki.directory / f"{name}.crt")
    finally:
        os.umask(old_umask)
    return pki
