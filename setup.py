"""Two distributions from one source tree: the node runtime, and the district and technician tools.

The Pi carries only the node (STYLE.md point 13): the district's CA, signing keys and tools never ship in
the node's package, so they are a separate distribution built from the same setup.py:

    pip install .                                                 # speaker-node: node/ only (the default)
    SPEAKER_DISTRIBUTION=district-tools pip install .             # speaker-district-tools: provisioning/
    pip wheel --no-deps .                                         # the node wheel for the offline bundle

`.ci/setup` installs both (editable) into .venv; `speaker-provision bundle` puts only the node wheel and
its dependencies on the card. tests/test_package_boundary.py keeps node/ from importing provisioning and
the node wheel free of provisioning files.
"""
import os
import re
from pathlib import Path

from setuptools import find_packages, setup

VERSION = re.search(r'__version__ = "([^"]+)"', Path("node/__init__.py").read_text()).group(1)
DISTRIBUTIONS = ("node", "district-tools")
DISTRIBUTION = os.environ.get("SPEAKER_DISTRIBUTION", "node")
if DISTRIBUTION not in DISTRIBUTIONS:
    raise SystemExit(f"SPEAKER_DISTRIBUTION must be one of {', '.join(DISTRIBUTIONS)}, not {DISTRIBUTION!r}")

# The node's runtime dependencies (provisioning/bundle.py downloads exactly these; a test keeps them in step).
NODE_REQUIREMENTS = [
    # CallbackAPIVersion.VERSION2 and MQTT v5 properties as used here arrived in 2.x; 2.1 fixed reconnect bugs.
    "paho-mqtt>=2.1",
    # X.509 verification API (cryptography.x509.verification) with client-certificate policy: 43+.
    "cryptography>=43",
    "gpiozero>=2.0",
    "pyserial>=3.5",
    "python-vlc>=3.0.18122",
]
DEV_REQUIREMENTS = ["pytest>=7.4", "pytest-timeout>=2.1", "hypothesis>=6.80", "jsonschema>=4.18", "ruff>=0.4",
                    # mutation testing of node/trust and the on-air decisions (tests/mutation/, README)
                    "mutmut>=3.2,<4",
                    # builds the node wheel offline in tests/test_package_boundary.py (bdist_wheel built in: 70.1)
                    "setuptools>=70.1"]

COMMON = dict(
    version=VERSION,
    long_description=Path("README.md").read_text(encoding="utf-8") if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="GPL-3.0-or-later",
    python_requires=">=3.11",
    include_package_data=True,
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: Multimedia :: Sound/Audio",
    ],
)

if DISTRIBUTION == "node":
    setup(
        name="speaker-node",
        description="Firmware for IT/telecom commune loudspeaker nodes (Raspberry Pi + 4G)",
        packages=find_packages(include=["node", "node.*"]),
        package_data={"node": ["data/*", "schemas/*.json"]},
        # systemd units and the udev rule travel with the wheel (speaker-provision sdcard copies them).
        data_files=[("share/speaker-node/systemd", sorted(str(p) for p in Path("systemd").glob("*") if p.is_file()))],
        install_requires=NODE_REQUIREMENTS,
        extras_require={"dev": DEV_REQUIREMENTS},
        entry_points={"console_scripts": ["speaker-node=node.cli:main"]},
        **COMMON,
    )
else:
    setup(
        name="speaker-district-tools",
        description="District and technician tools for speaker-node: keys, signing, certificates, SD cards, demo",
        packages=find_packages(include=["provisioning", "provisioning.*"]),
        package_data={"provisioning": ["broker/*", "firstboot/*", "templates/*"]},
        install_requires=[
            f"speaker-node=={VERSION}",  # the protocol, trust and message code is the node's own
            # QR code on the cabinet-door label made by speaker-provision (pure Python).
            "segno>=1.5",
        ],
        # The collector's PostgreSQL store (`speaker-district serve --db postgresql://...`); SQLite needs nothing.
        extras_require={"postgresql": ["psycopg>=3.1"]},
        entry_points={
            "console_scripts": [
                "speaker-provision=provisioning.cli:main",
                "speaker-district=provisioning.district.cli:main",
            ]
        },
        **COMMON,
    )
