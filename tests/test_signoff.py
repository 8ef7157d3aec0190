"""Signatures anyone can check, and sign-off (issue 19).

drproof's evidence carries an OpenSSH signature beside its own, and the test runs the
third-party tool on it: ``ssh-keygen -Y verify`` (Debian's openssh-client, which .ci/run
installs) must accept drproof's signature and refuse it after one byte of evidence.json
changed. The documented OpenSSL command is run too. Sign-off round-trips through
``evidence verify``: a review is listed when intact and reported when edited, unsigned,
stray, signed by an untrusted key, or about other evidence.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drills.cli import main
from engine import sshsig
from engine.evidence import (
    EVIDENCE_FILE,
    SIGNATURE_FILE,
    SSH_SIGNATURE_FILE,
    init_keys,
    load_private_key,
    load_public_key,
    sign_directory,
    verify_directory,
)
from engine.signoff import read_reviews, sign_off
from tests.integration.servers import require
from tests.test_evidence import _report_dir


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    require(name, path is not None, f"apt-get install {package}")
    assert path is not None
    return path


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "drill.key", tmp_path / "drill.pub"
    init_keys(private, public)
    return private, public


@pytest.fixture
def signed(tmp_path: Path, keys: tuple[Path, Path]) -> Path:
    directory = _report_dir(tmp_path)
    sign_directory(directory, load_private_key(keys[0]))
    return directory


def _allowed_signers(public: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    capsys.readouterr()
    assert main(["keys", "allowed-signers", str(public)]) == 0
    path = tmp_path / "allowed_signers"
    path.write_text(capsys.readouterr().out)
    return path


def _ssh_verify(ssh_keygen: str, allowed: Path, directory: Path) -> subprocess.CompletedProcess[str]:
    """The command docs/evidence.md gives an auditor, exactly."""
    with (directory / EVIDENCE_FILE).open("rb") as message:
        return subprocess.run(
            [ssh_keygen, "-Y", "verify", "-f", str(allowed), "-I", "drproof", "-n", "drproof-evidence",
             "-s", str(directory / SSH_SIGNATURE_FILE)],
            stdin=message, capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip


def test_ssh_keygen_verifies_drproofs_signature_and_refuses_a_changed_byte(
    signed: Path, keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ssh_keygen = _tool("ssh-keygen", "openssh-client")
    allowed = _allowed_signers(keys[1], tmp_path, capsys)
    good = _ssh_verify(ssh_keygen, allowed, signed)
    assert good.returncode == 0, good.stderr
    assert 'Good "drproof-evidence" signature for drproof with ED25519 key' in good.stdout + good.stderr
    data = bytearray((signed / EVIDENCE_FILE).read_bytes())
    data[10] ^= 1
    (signed / EVIDENCE_FILE).write_bytes(bytes(data))
    bad = _ssh_verify(ssh_keygen, allowed, signed)
    assert bad.returncode != 0


def test_ssh_keygen_refuses_another_key(signed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ssh_keygen = _tool("ssh-keygen", "openssh-client")
    init_keys(tmp_path / "other.key", tmp_path / "other.pub")
    allowed = _allowed_signers(tmp_path / "other.pub", tmp_path, capsys)
    assert _ssh_verify(ssh_keygen, allowed, signed).returncode != 0


def test_drproof_reads_what_ssh_keygen_signs(tmp_path: Path) -> None:
    """The other direction: our reader agrees with OpenSSH on the format, not only with itself."""
    ssh_keygen = _tool("ssh-keygen", "openssh-client")
    key = Ed25519PrivateKey.generate()
    (tmp_path / "id").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    (tmp_path / "id").chmod(0o600)
    message = tmp_path / "m.json"
    message.write_bytes(b'{"a": 1}\n')
    subprocess.run([ssh_keygen, "-Y", "sign", "-f", str(tmp_path / "id"), "-n", "drproof-evidence", str(message)],
                   check=True, capture_output=True, timeout=30)  # fmt: skip
    armored = (tmp_path / "m.json.sig").read_text()
    sshsig.verify(armored, message.read_bytes(), key.public_key())
    with pytest.raises(sshsig.SshsigError, match="namespace"):
        sshsig.verify(armored, message.read_bytes(), key.public_key(), namespace="git")
    with pytest.raises(sshsig.SshsigError, match="does not verify"):
        sshsig.verify(armored, b'{"a": 2}\n', key.public_key())


def test_the_documented_openssl_command_verifies_evidence_sig(
    signed: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    openssl = _tool("openssl", "openssl")
    raw = tmp_path / "evidence.sig.bin"
    raw.write_bytes(base64.b64decode((signed / SIGNATURE_FILE).read_bytes()))
    proc = subprocess.run(
        [openssl, "pkeyutl", "-verify", "-pubin", "-inkey", str(keys[1]), "-rawin",
         "-in", str(signed / EVIDENCE_FILE), "-sigfile", str(raw)],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0 and "Signature Verified Successfully" in proc.stdout, proc.stdout + proc.stderr


def test_drproof_checks_the_ssh_signature_too(signed: Path, keys: tuple[Path, Path]) -> None:
    key = load_public_key(keys[1])
    assert verify_directory(signed, key).ssh_signature == "verified"
    (signed / SSH_SIGNATURE_FILE).write_text((signed / SSH_SIGNATURE_FILE).read_text().replace("A", "B", 1))
    report = verify_directory(signed, key)
    assert not report.ok and any(SSH_SIGNATURE_FILE in p for p in report.problems())


def test_evidence_signed_before_the_ssh_signature_keeps_verifying(signed: Path, keys: tuple[Path, Path]) -> None:
    (signed / SSH_SIGNATURE_FILE).unlink()  # what drproof wrote before issue 19
    report = verify_directory(signed, load_public_key(keys[1]))
    assert report.ok and report.ssh_signature == "absent"


# --- sign-off --------------------------------------------------------------------------


def _sign_off(directory: Path, key: Path, public: Path, *extra: str) -> int:
    return main(["evidence", "sign-off", str(directory), "--reviewer", "Jane Auditor", "--decision",
                 "action-required", "--note", "restore took too long", "--ticket", "SEC-123",
                 "--sign-key", str(key), "--public-key", str(public), *extra])  # fmt: skip


def _verify(directory: Path, *publics: Path) -> dict[str, object]:
    argv = ["evidence", "verify", str(directory), "--json"]
    for p in publics:
        argv += ["--public-key", str(p)]
    return {"code": main(argv)}


def test_sign_off_round_trips_through_verify(
    signed: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _sign_off(signed, *keys) == 0
    capsys.readouterr()
    assert main(["evidence", "verify", str(signed), "--public-key", str(keys[1]), "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    (review,) = verdict["reviews"]
    assert review["ok"] and review["verified"] and review["ssh_signature"] == "verified"
    assert (review["reviewer"], review["decision"], review["ticket"]) == ("Jane Auditor", "action-required", "SEC-123")
    assert review["signed_by"]["user"]  # who ran the sign-off, from the environment


def test_an_edited_review_is_reported(
    signed: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _sign_off(signed, *keys) == 0
    (path,) = (signed / "reviews").glob("*.json")
    path.write_text(path.read_text().replace("action-required", "accepted"))
    capsys.readouterr()
    assert main(["evidence", "verify", str(signed), "--public-key", str(keys[1])]) == 1
    out = capsys.readouterr().out
    assert f"review: reviews/{path.name}: its signature does not verify" in out


def test_an_unsigned_or_stray_review_is_reported(signed: Path, keys: tuple[Path, Path]) -> None:
    assert _sign_off(signed, *keys) == 0
    (path,) = (signed / "reviews").glob("*.json")
    path.with_suffix(".sig").unlink()
    (signed / "reviews" / "notes.txt").write_text("looks fine")
    report = verify_directory(signed, load_public_key(keys[1]))
    problems = "\n".join(report.problems())
    assert not report.ok and "unsigned" in problems and "reviews/notes.txt" in problems


def test_a_review_of_other_evidence_is_reported(signed: Path, keys: tuple[Path, Path]) -> None:
    assert _sign_off(signed, *keys) == 0
    (signed / "report.html").write_text("<html>edited after the review</html>")
    sign_directory(signed, load_private_key(keys[0]))  # re-signed: the evidence is intact, the review is stale
    report = verify_directory(signed, load_public_key(keys[1]))
    assert report.signature_ok and not report.changed
    assert not report.ok and "reviewed other evidence" in "\n".join(report.problems())


def test_a_reviewer_key_must_be_trusted_explicitly(signed: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    init_keys(tmp_path / "jane.key", tmp_path / "jane.pub")
    assert _sign_off(signed, tmp_path / "jane.key", keys[1]) == 0
    only_drill = verify_directory(signed, load_public_key(keys[1]))
    assert not only_drill.ok and not only_drill.reviews[0].ok
    both = verify_directory(signed, load_public_key(keys[1]), other_keys=[load_public_key(tmp_path / "jane.pub")])
    assert both.ok and both.reviews[0].key_fingerprint != both.key_fingerprint


def test_tampered_evidence_is_not_signed_off(signed: Path, keys: tuple[Path, Path]) -> None:
    (signed / "junit.xml").write_text("<testsuites/>edited")
    assert _sign_off(signed, *keys) == 1
    assert not (signed / "reviews").exists()


def test_unsigned_evidence_cannot_be_signed_off(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    directory = _report_dir(tmp_path)
    assert _sign_off(directory, *keys) == 2


def test_reviews_are_appended_never_replaced_and_secrets_in_notes_are_masked(signed: Path) -> None:
    key = Ed25519PrivateKey.generate()
    sign_off(signed, key, reviewer="a", decision="rejected", note="db is postgres://u:hunter2@h/x")
    sign_off(signed, key, reviewer="a", decision="rejected")
    claims = read_reviews(signed)
    assert len(claims) == 2 and all(not c.verified for c in claims)
    assert claims[0].note == "db is postgres://u:***@h/x"
