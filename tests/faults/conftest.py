"""Fixtures of the fault tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme


@pytest.fixture
def tls(tmp_path: Path) -> dict[str, Path]:
    """A private CA and a certificate for 127.0.0.1 and a name only a proxy knows."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "hub.tether-test.invalid")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "hub.pem", "key": tmp_path / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(files["cert"]), append=True)
    return files
