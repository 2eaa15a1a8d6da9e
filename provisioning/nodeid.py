"""Node identity rules: `27787-03` = official 5-digit commune code, dash, 2-digit cluster number.

Groups follow the administrative tree so the district can address a whole commune, district or
province: `c27787`, `d760`, `p75` (`all` is implicit and never written into a node's config).
Pure functions; every problem found is reported at once as a ConfigError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from node.errors import ConfigError

NODE_ID_RE = re.compile(r"(?P<commune>[0-9]{5})-(?P<cluster>[0-9]{2})")
MAX_CLUSTER = 99


@dataclass(frozen=True)
class NodeIdentity:
    commune: str  # "27787"
    district: str  # "760"
    province: str  # "75"
    cluster: int  # 3

    @property
    def node_id(self) -> str:
        return f"{self.commune}-{self.cluster:02d}"

    @property
    def groups(self) -> list[str]:
        return [f"c{self.commune}", f"d{self.district}", f"p{self.province}"]


def _code(value, width: int, label: str, problems: list[str]) -> str:
    text = str(value).strip()
    if not text.isdigit() or not text.isascii():
        problems.append(f"{label} code must be digits only, got {value!r}")
        return ""
    if len(text) > width:
        problems.append(f"{label} code must have {width} digits, got {text!r}")
        return ""
    padded = text.zfill(width)
    if int(padded) == 0:
        problems.append(f"{label} code must not be zero")
        return ""
    return padded


def make_identity(commune, district, province, cluster) -> NodeIdentity:
    """Build and validate an identity; short codes are zero-padded (district 1 -> "001")."""
    problems: list[str] = []
    commune_code = _code(commune, 5, "commune", problems)
    district_code = _code(district, 3, "district", problems)
    province_code = _code(province, 2, "province", problems)
    try:
        cluster_no = int(str(cluster).strip())
    except ValueError:
        problems.append(f"cluster must be a number 1..{MAX_CLUSTER}, got {cluster!r}")
        cluster_no = 0
    else:
        if not 1 <= cluster_no <= MAX_CLUSTER:
            problems.append(f"cluster must be 1..{MAX_CLUSTER}, got {cluster_no}")
    if problems:
        raise ConfigError(problems)
    return NodeIdentity(commune_code, district_code, province_code, cluster_no)


def parse_node_id(node_id: str) -> tuple[str, int]:
    """Return (commune, cluster) or raise ConfigError explaining the expected shape."""
    match = NODE_ID_RE.fullmatch(node_id or "")
    if not match:
        raise ConfigError(
            [
                f"node id {node_id!r} is not COMMUNE-CLUSTER: 5-digit commune code, dash, "
                "2-digit cluster number (e.g. 27787-03)"
            ]
        )
    cluster = int(match["cluster"])
    if cluster == 0 or int(match["commune"]) == 0:
        raise ConfigError([f"node id {node_id!r}: commune code and cluster number must not be zero"])
    return match["commune"], cluster


def is_valid_node_id(node_id: str) -> bool:
    try:
        parse_node_id(node_id)
    except ConfigError:
        return False
    return True
