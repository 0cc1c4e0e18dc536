"""A throw-away PKI for the TLS tests: a CA, server and client certificates, a rogue CA."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["make_pki"]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(folder: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout",
             f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN=kidney-node {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)


def _leaf(folder: Path, name: str, ca: str, usage: str) -> None:
    (folder / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={usage}\nsubjectAltName=IP:127.0.0.1\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
             f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile",
             f"{name}.ext", cwd=folder)


def make_pki(folder: Path) -> Path:
    """``ca``, ``rogue-ca`` (CAs), ``server`` and ``client`` (signed by ``ca``) and
    ``rogue`` (a client signed by ``rogue-ca``) as ``NAME.pem`` + ``NAME.key`` in
    ``folder`` (created); every leaf names 127.0.0.1."""
    folder.mkdir(parents=True, exist_ok=True)
    _ca(folder, "ca")
    _ca(folder, "rogue-ca")
    _leaf(folder, "server", "ca", "serverAuth")
    _leaf(folder, "client", "ca", "clientAuth")
    _leaf(folder, "rogue", "rogue-ca", "clientAuth")
    return folder
