"""One-time provisioning tokens: minted by the command line, stored hashed, spent once, expiring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from cloud_relay.provisioning import MAX_TTL, mint_token, redeem_token, tokens_path
from cloud_relay.tokens import token_hash

REPO = Path(__file__).parents[2]


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloud_relay", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_cli_mints_a_token_stored_only_as_its_hash(tmp_path: Path) -> None:
    # No relay.toml yet: minting needs only the directory (the add-on mints before serving).
    config = tmp_path / "state" / "relay.toml"
    result = _cli(config, "provisioning-token", "--ttl", "600")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert len(token) == 43  # 256 bits, base64url
    assert result.stdout == token + "\n"
    stored = tokens_path(config)
    assert stored == tmp_path / "state" / "provisioning-tokens.json"
    assert stored.stat().st_mode & 0o777 == 0o600
    text = stored.read_text()
    assert token not in text
    (entry,) = json.loads(text)["tokens"]
    assert entry["hash"] == token_hash(token).hex()
    assert time.time() + 590 < entry["expires"] <= time.time() + 600
    # Single use.
    assert redeem_token(stored, token, now=time.time())
    assert not redeem_token(stored, token, now=time.time())


def test_cli_refuses_a_lifetime_out_of_range(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    for ttl in ("0", str(MAX_TTL + 1)):
        result = _cli(config, "provisioning-token", "--ttl", ttl)
        assert result.returncode == 1
        assert result.stderr == (
            f"error: the token's lifetime must be between 1 and {MAX_TTL} seconds\n"
        )
    assert not tokens_path(config).exists()


def test_a_token_expires_and_others_survive_a_redemption(tmp_path: Path) -> None:
    path = tmp_path / "provisioning-tokens.json"
    first = mint_token(path, ttl=60, now=1000)
    second = mint_token(path, ttl=600, now=1000)
    assert not redeem_token(path, first, now=1060)  # expired exactly at its end
    assert not redeem_token(path, "not-a-token", now=1000)
    assert redeem_token(path, second, now=1599)
    assert json.loads(path.read_text())["tokens"] == []


def test_a_corrupt_token_file_names_the_way_out(tmp_path: Path) -> None:
    path = tmp_path / "provisioning-tokens.json"
    path.write_text("[]")
    result = _cli(tmp_path / "relay.toml", "provisioning-token")
    assert result.returncode == 1
    assert result.stderr == (
        f"error: {path} is not a provisioning-token file; delete it and mint a new token\n"
    )
