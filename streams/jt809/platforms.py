"""Lower platforms allowed on the JT/T 809 link: credentials and cipher parameters per platform.

They live in their own TOML file (``jt809.platforms_file``) rather than in the main config, so that
``roadwatch config show`` never prints passwords::

    [[platform]]
    name = "某运输企业监控平台"
    center_id = 20180920          # MSG_GNSSCENTERID, the platform's access code (接入码)
    user_id = 20180920
    password = "20180920"         # at most 8 bytes
    protocol = 2011               # 2011 | 2019 (header layout of this link)
    cipher = "30000000,20000000,20000000"   # M1,IA1,IC1 — optional; needed for encrypted bodies
    encrypt_downlink = false      # encrypt what we send on this link (needs cipher)
"""
from __future__ import annotations

from dataclasses import dataclass

from roadwatch.models.config import Config, ConfigError, read_toml_file

from .codec import Cipher, Jt809Error


@dataclass(frozen=True)
class Platform:
    center_id: int
    name: str
    user_id: int
    password: str
    protocol: int = 2011
    cipher: Cipher | None = None
    encrypt_downlink: bool = False


def _u32(row: dict, key: str, where: str) -> int:
    v = row.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0xFFFFFFFF:
        raise ConfigError(f"{where}: {key} must be an unsigned 32-bit integer, got {v!r}")
    return v


def parse_platforms(data: dict, where: str = "platforms") -> dict[int, Platform]:
    rows = data.get("platform", [])
    if not isinstance(rows, list):
        raise ConfigError(f"{where}: expected [[platform]] tables")
    out: dict[int, Platform] = {}
    for i, row in enumerate(rows, 1):
        w = f"{where} platform #{i}"
        if not isinstance(row, dict):
            raise ConfigError(f"{w}: expected a table")
        unknown = set(row) - {"name", "center_id", "user_id", "password", "protocol", "cipher", "encrypt_downlink"}
        if unknown:
            raise ConfigError(f"{w}: unknown keys {sorted(unknown)}")
        center = _u32(row, "center_id", w)
        pw = row.get("password")
        if not isinstance(pw, str) or not pw or len(pw.encode("gbk", errors="replace")) > 8:
            raise ConfigError(f"{w}: password must be a non-empty string of at most 8 bytes")
        proto = row.get("protocol", 2011)
        if proto not in (2011, 2019):
            raise ConfigError(f"{w}: protocol must be 2011 or 2019, got {proto!r}")
        cipher = None
        if row.get("cipher"):
            try:
                cipher = Cipher.parse(row["cipher"])
            except Jt809Error as e:
                raise ConfigError(f"{w}: {e.detail}") from None
        enc = row.get("encrypt_downlink", False)
        if not isinstance(enc, bool) or (enc and cipher is None):
            raise ConfigError(f"{w}: encrypt_downlink must be true/false and needs a cipher")
        if center in out:
            raise ConfigError(f"{w}: center_id {center} listed twice")
        out[center] = Platform(center, str(row.get("name") or center), _u32(row, "user_id", w), pw, proto, cipher, enc)
    return out


def load_platforms(cfg: Config) -> dict[int, Platform]:
    """The platforms of ``jt809.platforms_file`` (empty when the key is empty)."""
    got = read_toml_file(cfg, "jt809.platforms_file")
    return parse_platforms(*got) if got else {}


def render_platforms(platforms: list[Platform]) -> str:
    """TOML for ``platforms`` (simulators and tests write the file the server reads)."""
    lines = []
    for p in platforms:
        lines += ["[[platform]]", f'name = "{p.name}"', f"center_id = {p.center_id}", f"user_id = {p.user_id}",
                  f'password = "{p.password}"', f"protocol = {p.protocol}"]
        if p.cipher is not None:
            lines.append(f'cipher = "{p.cipher.m1},{p.cipher.ia1},{p.cipher.ic1}"')
        lines += [f"encrypt_downlink = {'true' if p.encrypt_downlink else 'false'}", ""]
    return "\n".join(lines)
