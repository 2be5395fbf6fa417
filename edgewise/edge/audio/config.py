"""The audio input settings of the edge SER pipeline: where audio comes from and how it is cut.

Loaded once with :func:`edgewise.config.load_config`, which reports a bad value as
``audio.yaml: field 'threshold': input should be less than 1, got 1.5``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from edgewise.config import StrictModel


class AudioInputConfig(StrictModel):
    """Source, device and VAD/segmenter settings. Times are in seconds, rates in Hz."""

    # none: no audio input (a device that only speaks: a TTS bundle answering ``tts`` commands)
    source: Literal["mic", "stdin", "file", "none"] = "mic"
    files: list[Path] = Field(default_factory=list, validate_default=True)  # source 'file'
    device: int | str | None = None  # mic: index or (part of) a name; None = the system default
    # mic: None = 16 kHz if the device allows, else its default; stdin raw: None = 16 kHz
    samplerate: int | None = Field(None, ge=8000, le=384000)
    channels: int = Field(1, ge=1, le=64)  # channels to open / in the raw stream; always downmixed
    # frames per block at the source rate; None = 0.1 s
    blocksize: int | None = Field(None, ge=16, le=1_000_000)
    stdin_format: Literal["auto", "raw", "wav"] = "auto"  # raw = s16le at samplerate/channels
    queue_blocks: int = Field(100, ge=2, le=100_000)  # mic: blocks buffered before new ones are dropped
    duration_s: float | None = Field(None, gt=0)  # mic/stdin: stop after this much audio
    vad: Literal["silero", "energy", "none"] = "silero"
    vad_model: Path | None = None  # a Silero VAD ONNX file; default: the bundle's, else the pip package's
    threshold: float = Field(0.5, gt=0, lt=1)  # speech probability that starts speech
    neg_threshold: float | None = Field(None, gt=0, lt=1)  # below it speech ends; None = threshold - 0.15
    min_speech_s: float = Field(0.25, ge=0, le=60)
    min_silence_s: float = Field(0.4, gt=0, le=60)
    speech_pad_s: float = Field(0.1, ge=0, le=5)
    max_utterance_s: float = Field(10.0, ge=0.1, le=600)

    @field_validator("files")
    @classmethod
    def _files_for_file_source(cls, files: list[Path], info: ValidationInfo) -> list[Path]:
        if info.data.get("source") == "file" and not files:
            raise ValueError("at least one audio file is required when source is 'file'")
        return files

    @field_validator("device")
    @classmethod
    def _device_index_or_name(cls, device: int | str | None) -> int | str | None:
        if isinstance(device, str):
            device = device.strip()
            if not device:
                raise ValueError("must be a device index or name, not empty")
            if device.isdigit():
                return int(device)
        if isinstance(device, int) and device < 0:
            raise ValueError("a device index cannot be negative")
        return device

    @field_validator("neg_threshold")
    @classmethod
    def _below_threshold(cls, value: float | None, info: ValidationInfo) -> float | None:
        threshold = info.data.get("threshold")
        if value is not None and threshold is not None and value > threshold:
            raise ValueError(f"must not exceed threshold ({threshold})")
        return value

    @field_validator("max_utterance_s")
    @classmethod
    def _room_for_speech(cls, value: float, info: ValidationInfo) -> float:
        min_speech, pad = info.data.get("min_speech_s"), info.data.get("speech_pad_s")
        if min_speech is not None and pad is not None and value <= min_speech + pad + 0.032:
            raise ValueError(
                f"must exceed min_speech_s + speech_pad_s + 0.032 ({min_speech + pad + 0.032:g})"
            )
        return value
