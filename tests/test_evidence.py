"""Signed evidence: any change to a signed report directory is named, and keys never leak."""

from __future__ import annotations

import json
import stat
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from drills.cli import main
from engine.errors import ConfigError
from engine.evidence import (
    EVIDENCE_FILE,
    KEY_ENV,
    PASSPHRASE_ENV,
    SIGNATURE_FILE,
    fingerprint,
    init_keys,
    load_private_key,
    load_public_key,
    sign_directory,
    verify_directory,
)

# A report directory as a drill leaves it, plus a nested file to cover recursion.
FILES = {
    "results.json": b'{"verdict": "pass"}\n',
    "junit.xml": b"<testsuites/>\n",
    "report.html": b"<html><body>PASS</body></html>\n",
    "logs/postgres.log": b"LOG:  database system is ready\n" * 20,
}


def _report_dir(root: Path) -> Path:
    directory = root / "report"
    for rel, data in FILES.items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_bytes(data)
    return directory


def _signed(root: Path) -> tuple[Path, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    directory = _report_dir(root)
    sign_directory(directory, key)
    return directory, key


def test_round_trip_lists_every_file_sorted_and_verifies(tmp_path: Path) -> None:
    directory, key = _signed(tmp_path)
    manifest = json.loads((directory / EVIDENCE_FILE).read_text())
    assert [f["path"] for f in manifest["files"]] == sorted(FILES)
    assert manifest["key_fingerprint"] == fingerprint(key.public_key())
    assert manifest["created_at"].endswith("Z") and manifest["drproof_version"]
    report = verify_directory(directory, key.public_key())
    assert report.ok and report.problems() == [] and report.checked == len(FILES)


def test_resigning_a_signed_directory_does_not_list_the_evidence_itself(tmp_path: Path) -> None:
    directory, key = _signed(tmp_path)
    sign_directory(directory, key)
    paths = [f["path"] for f in json.loads((directory / EVIDENCE_FILE).read_text())["files"]]
    assert EVIDENCE_FILE not in paths and SIGNATURE_FILE not in paths
    assert verify_directory(directory, key.public_key()).ok


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_one_changed_byte_anywhere_names_exactly_that_file(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory, key = _signed(Path(tmp))
        rel = data.draw(st.sampled_from(sorted(FILES)), label="file")
        offset = data.draw(st.integers(0, len(FILES[rel]) - 1), label="offset")
        delta = data.draw(st.integers(1, 255), label="xor")
        content = bytearray((directory / rel).read_bytes())
        content[offset] ^= delta
        (directory / rel).write_bytes(bytes(content))
        report = verify_directory(directory, key.public_key())
        assert not report.ok
        assert report.signature_ok
        assert list(report.changed) == [rel]
        assert report.added == [] and report.removed == []
        assert [line for line in report.problems() if rel in line] == report.problems()


def test_added_file_is_named(tmp_path: Path) -> None:
    directory, key = _signed(tmp_path)
    (directory / "logs" / "extra.txt").write_text("planted\n")
    report = verify_directory(directory, key.public_key())
    assert not report.ok and report.added == ["logs/extra.txt"]
    assert report.problems() == ["added: logs/extra.txt (not in evidence.json)"]


def test_an_added_link_to_a_forged_tree_and_an_added_fifo_are_named(tmp_path: Path) -> None:
    import os

    directory, key = _signed(tmp_path)
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / "results.json").write_text('{"verdict": "pass"}')
    (directory / "evidence-extra").symlink_to(forged, target_is_directory=True)
    os.mkfifo(directory / "logs" / "pipe")
    report = verify_directory(directory, key.public_key())
    assert not report.ok
    assert report.added == ["evidence-extra (symbolic link)", "logs/pipe (named pipe)"]


def test_a_signed_file_replaced_by_a_link_is_changed(tmp_path: Path) -> None:
    directory, key = _signed(tmp_path)
    target = next(
        p
        for p in directory.rglob("*")
        if p.is_file() and p.name != "evidence.json" and not p.name.startswith("evidence.")
    )
    copy = tmp_path / "same-bytes"
    copy.write_bytes(target.read_bytes())
    target.unlink()
    target.symlink_to(copy)
    report = verify_directory(directory, key.public_key())
    rel = target.relative_to(directory).as_posix()
    assert not report.ok and report.changed == {rel: "is a symbolic link now, not the file that was signed"}


def test_a_directory_with_a_link_or_pipe_is_not_signed(tmp_path: Path) -> None:
    import os

    directory = _report_dir(tmp_path)
    os.mkfifo(directory / "pipe")
    with pytest.raises(ConfigError, match="not regular files: pipe \\(named pipe\\)"):
        sign_directory(directory, Ed25519PrivateKey.generate())


def test_removed_file_is_named(tmp_path: Path) -> None:
    directory, key = _signed(tmp_path)
    (directory / "junit.xml").unlink()
    report = verify_directory(directory, key.public_key())
    assert not report.ok and report.removed == ["junit.xml"] and not report.changed


def test_wrong_public_key_is_a_signature_failure(tmp_path: Path) -> None:
    directory, _ = _signed(tmp_path)
    other = Ed25519PrivateKey.generate().public_key()
    report = verify_directory(directory, other)
    assert not report.ok and not report.signature_ok
    assert report.problems()[0].startswith("signature:")
    assert fingerprint(other) in str(report.signature_problem)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda text: text.replace('"size": ', '"size": 1', 1),
        lambda text: text.replace("report.html", "report.htm", 1),
        lambda text: text + " ",
    ],
    ids=["size", "path", "trailing-space"],
)
def test_tampered_evidence_json_is_a_signature_failure(tmp_path: Path, tamper: object) -> None:
    directory, key = _signed(tmp_path)
    evidence = directory / EVIDENCE_FILE
    evidence.write_text(tamper(evidence.read_text()))  # type: ignore[operator]
    report = verify_directory(directory, key.public_key())
    assert not report.signature_ok and not report.ok
    assert "evidence.json" in str(report.signature_problem)


def test_missing_or_garbled_signature_is_a_failure_not_an_error(tmp_path: Path) -> None:
    directory, key = _signed(tmp_path)
    (directory / SIGNATURE_FILE).write_text("not base64 at all!\n")
    assert not verify_directory(directory, key.public_key()).signature_ok
    (directory / SIGNATURE_FILE).unlink()
    report = verify_directory(directory, key.public_key())
    assert not report.ok and "missing" in str(report.signature_problem)


def test_unsigned_directory_is_unusable_input(tmp_path: Path) -> None:
    directory = _report_dir(tmp_path)
    with pytest.raises(ConfigError, match=r"no evidence\.json"):
        verify_directory(directory, Ed25519PrivateKey.generate().public_key())


def test_keys_init_creates_0600_and_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    private, public = tmp_path / "k.key", tmp_path / "k.pub"
    assert main(["keys", "init", "--private", str(private), "--public", str(public)]) == 0
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    fp = fingerprint(load_public_key(public))
    assert fp in capsys.readouterr().out and len(fp) == 32
    before = private.read_bytes()
    assert main(["keys", "init", "--private", str(private), "--public", str(tmp_path / "other.pub")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert private.read_bytes() == before and not (tmp_path / "other.pub").exists()
    with pytest.raises(ConfigError, match="already exists"):
        init_keys(tmp_path / "new.key", public)
    assert not (tmp_path / "new.key").exists()


def test_private_key_from_env_and_with_passphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse")
    pair = init_keys(tmp_path / "k.key", tmp_path / "k.pub")
    assert pair.encrypted and b"ENCRYPTED" in (tmp_path / "k.key").read_bytes()
    assert fingerprint(load_private_key(tmp_path / "k.key").public_key()) == pair.fingerprint
    monkeypatch.setenv(KEY_ENV, (tmp_path / "k.key").read_text())
    assert fingerprint(load_private_key().public_key()) == pair.fingerprint
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(ConfigError, match=f"encrypted; set {PASSPHRASE_ENV}"):
        load_private_key()
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    with pytest.raises(ConfigError, match="wrong passphrase"):
        load_private_key(tmp_path / "k.key")


def test_private_key_never_appears_in_any_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    private, public = tmp_path / "k.key", tmp_path / "k.pub"
    assert main(["keys", "init", "--private", str(private), "--public", str(public)]) == 0
    pem = private.read_text()
    body = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    directory = _report_dir(tmp_path)
    sign_directory(directory, load_private_key(private))
    assert main(["evidence", "verify", str(directory), "--public-key", str(public)]) == 0
    assert main(["evidence", "verify", str(directory), "--public-key", str(public), "--json"]) == 0
    # Error paths: the key given where the public key belongs, and a damaged key in the environment.
    assert main(["evidence", "verify", str(directory), "--public-key", str(private)]) == 2
    monkeypatch.setenv(KEY_ENV, pem.replace(body[0], body[0][::-1]))
    with pytest.raises(ConfigError) as exc:
        load_private_key()
    captured = capsys.readouterr()
    for text in (captured.out, captured.err, str(exc.value)):
        assert all(line not in text for line in body)
    for path in directory.rglob("*"):
        if path.is_file():
            assert all(line not in path.read_text() for line in body)


def test_verify_cli_exit_codes_and_one_line_per_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    private, public = tmp_path / "k.key", tmp_path / "k.pub"
    init_keys(private, public)
    directory = _report_dir(tmp_path)
    sign_directory(directory, load_private_key(private))
    (directory / "report.html").write_bytes(b"<html>FAIL</html>")
    (directory / "results.json").unlink()
    (directory / "planted.txt").write_text("x")
    capsys.readouterr()
    assert main(["evidence", "verify", str(directory), "--public-key", str(public)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("changed: report.html")
    assert lines[1].startswith("added: planted.txt")
    assert lines[2].startswith("removed: results.json")
    assert main(["evidence", "verify", str(directory), "--public-key", str(public), "--json"]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["ok"] is False and verdict["removed"] == ["results.json"]
    assert main(["evidence", "verify", str(tmp_path / "nowhere"), "--public-key", str(public)]) == 2
    assert main(["evidence", "verify", str(directory), "--public-key", str(tmp_path / "missing.pub")]) == 2


def test_run_signing_failures_are_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from drills.cli import _sign_reports, _signing_key
    from engine.errors import DrproofError

    monkeypatch.delenv(KEY_ENV, raising=False)
    assert _signing_key(None) is None  # nothing asked for: the run is not signed
    monkeypatch.setenv(KEY_ENV, "not a key")
    with pytest.raises(ConfigError, match=KEY_ENV) as bad:
        _signing_key(None)  # checked before the drill starts
    assert bad.value.exit_code == 2
    with pytest.raises(DrproofError, match="signing them failed") as failed:
        _sign_reports(tmp_path / "missing", Ed25519PrivateKey.generate(), Console(), quiet=True)
    assert failed.value.exit_code == 2
