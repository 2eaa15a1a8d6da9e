"""Commune speaker-node firmware: the node daemon and the off-node tools around it."""
import re
from pathlib import Path

from setuptools import find_packages, setup

VERSION = re.search(r'__version__ = "([^"]+)"', Path("node/__init__.py").read_text()).group(1)

setup(
    name="speaker-node",
    version=VERSION,
    description="Firmware for IT/telecom commune loudspeaker nodes (Raspberry Pi + 4G) and district tools",
    long_description=Path("README.md").read_text(encoding="utf-8") if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="GPL-3.0-or-later",
    python_requires=">=3.11",
    packages=find_packages(include=["node", "node.*", "provisioning", "provisioning.*"]),
    package_data={
        "node": ["data/*", "schemas/*.json"],
        "provisioning": ["broker/*", "firstboot/*", "templates/*"],
    },
    include_package_data=True,
    # systemd units and the udev rule travel with the wheel (speaker-provision sdcard copies them).
    data_files=[("share/speaker-node/systemd", sorted(str(p) for p in Path("systemd").glob("*") if p.is_file()))],
    install_requires=[
        # CallbackAPIVersion.VERSION2 and MQTT v5 properties as used here arrived in 2.x; 2.1 fixed reconnect bugs.
        "paho-mqtt>=2.1",
        # X.509 verification API (cryptography.x509.verification) with client-certificate policy: 43+.
        "cryptography>=43",
        "gpiozero>=2.0",
        "pyserial>=3.5",
        "python-vlc>=3.0.18122",
    ],
    extras_require={
        # QR code on the cabinet-door label made by speaker-provision (technician laptop only, pure Python).
        "provision": ["segno>=1.5"],
        "dev": ["pytest>=7.4", "pytest-timeout>=2.1", "hypothesis>=6.80", "jsonschema>=4.18", "ruff>=0.4",
                "segno>=1.5"],
    },
    entry_points={
        "console_scripts": [
            "speaker-node=node.cli:main",
            "speaker-provision=provisioning.cli:main",
            "speaker-district=provisioning.district.cli:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: Multimedia :: Sound/Audio",
    ],
)
