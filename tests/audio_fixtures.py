"""Test audio: make short WAVs with sox / espeak-ng, and measure what libVLC wrote.

The analysis reads 8/16-bit PCM WAV with the stdlib `wave` module so tests need no numpy.
"""

from __future__ import annotations

import array
import math
import shutil
import subprocess
import sys
import wave
from dataclasses import dataclass
from pathlib import Path

SILENCE_THRESHOLD = 0.01  # of full scale; libVLC's s16 output of digital silence is exactly 0


def have_tool(name: str) -> bool:
    return shutil.which(name) is not None


def tone_wav(path: Path, seconds: float = 1.5, freq: float = 440.0, rate: int = 22050,
             amplitude: float = 0.5, lead_silence: float = 0.0) -> Path:
    """A sine tone (optionally after `lead_silence` seconds of silence), mono 16-bit, made with sox."""
    path = Path(path)
    cmd = ["sox", "-n", "-r", str(rate), "-c", "1", "-b", "16", str(path),
           "synth", f"{seconds}", "sine", f"{freq}", "vol", f"{amplitude}"]
    if lead_silence:
        cmd += ["pad", f"{lead_silence}", "0"]
    subprocess.run(cmd, check=True, capture_output=True)
    return path


def speech_wav(path: Path, text: str = "Thông báo thử nghiệm", voice: str = "vi") -> Path:
    """A short spoken phrase rendered by espeak-ng (Vietnamese voice by default)."""
    path = Path(path)
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
    return path


def ogg_from_wav(wav: Path, ogg: Path) -> Path:
    """Transcode with sox (used to serve a compressed stream over HTTP)."""
    subprocess.run(["sox", str(wav), str(ogg)], check=True, capture_output=True)
    return Path(ogg)


@dataclass(frozen=True)
class WavAnalysis:
    sample_rate: int
    channels: int
    frames: int
    duration: float  # seconds of audio in the file (silence included)
    first_sound_at: float | None  # seconds to the first sample above the threshold; None = all silent
    sounding_seconds: float  # seconds between first and last sample above the threshold
    rms: float  # 0..1 of full scale over the whole file


def analyse_wav(path: Path, threshold: float = SILENCE_THRESHOLD) -> WavAnalysis:
    with wave.open(str(path), "rb") as wav:
        rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
        raw = wav.readframes(wav.getnframes())
    if width == 2:
        samples = array.array("h")
        samples.frombytes(raw[: len(raw) - len(raw) % 2])
        if sys.byteorder == "big":
            samples.byteswap()
        scale = 32768.0
        values = samples
    elif width == 1:
        values = [b - 128 for b in raw]
        scale = 128.0
    else:
        raise ValueError(f"unsupported sample width {width} in {path}")
    frames = len(values) // channels
    limit = threshold * scale
    first = last = None
    total = 0.0
    for index, value in enumerate(values):
        total += value * value
        if abs(value) > limit:
            if first is None:
                first = index
            last = index
    rms = math.sqrt(total / len(values)) / scale if values else 0.0
    per_second = rate * channels
    return WavAnalysis(
        sample_rate=rate, channels=channels, frames=frames, duration=frames / rate if rate else 0.0,
        first_sound_at=None if first is None else first / per_second,
        sounding_seconds=0.0 if first is None else (last - first + 1) / per_second, rms=rms,
    )
