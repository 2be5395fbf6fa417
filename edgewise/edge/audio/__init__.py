"""Audio input of the edge SER pipeline: sources, voice activity detection, utterance segmentation.

Typical use::

    config = load_config(AudioInputConfig, "audio.yaml")
    vad = build_vad(config.vad, config.vad_model or bundle_vad_path, config.threshold)
    segmenter = UtteranceSegmenter.from_config(config, vad)
    with open_source(config) as source:
        for utterance in segmenter.segment(source):
            ...  # utterance.audio: float32 mono 16 kHz

Nothing here imports torch; sounddevice and onnxruntime are imported only when used.
"""

from edgewise.audio import StreamResampler
from edgewise.edge.audio.config import AudioInputConfig
from edgewise.edge.audio.segmenter import SegmenterStats, Utterance, UtteranceSegmenter
from edgewise.edge.audio.sources import (
    SAMPLE_RATE,
    AudioSource,
    CaptureStats,
    InputDevice,
    MicrophoneSource,
    StdinSource,
    WavFileSource,
    list_input_devices,
    open_source,
)
from edgewise.edge.audio.vad import EnergyVAD, SileroVAD, StreamingVAD, build_vad, find_silero_vad_onnx

__all__ = [
    "SAMPLE_RATE",
    "AudioInputConfig",
    "AudioSource",
    "CaptureStats",
    "EnergyVAD",
    "InputDevice",
    "MicrophoneSource",
    "SegmenterStats",
    "SileroVAD",
    "StdinSource",
    "StreamResampler",
    "StreamingVAD",
    "Utterance",
    "UtteranceSegmenter",
    "WavFileSource",
    "build_vad",
    "find_silero_vad_onnx",
    "list_input_devices",
    "open_source",
]
