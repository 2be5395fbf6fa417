"""AudioInputConfig: defaults work, every refusal names its field, and the config builds the parts."""

import pytest

from edgewise.config import load_config
from edgewise.edge.audio import AudioInputConfig, UtteranceSegmenter, WavFileSource, open_source
from edgewise.errors import ConfigError


def test_defaults_are_valid():
    config = AudioInputConfig()
    assert (config.source, config.vad, config.threshold, config.device) == ("mic", "silero", 0.5, None)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"threshold": 1.5}, "field 'threshold': input should be less than 1, got 1.5"),
        (
            {"threshold": 0.4, "neg_threshold": 0.6},
            "field 'neg_threshold': value error, must not exceed threshold",
        ),
        ({"source": "file"}, "field 'files': value error, at least one audio file is required"),
        (
            {"source": "radio"},
            "field 'source': input should be 'mic', 'stdin', 'file' or 'none', got 'radio'",
        ),
        ({"vad": "webrtc"}, "field 'vad': input should be 'silero', 'energy' or 'none'"),
        ({"samplerate": 100}, "field 'samplerate': input should be greater than or equal to 8000"),
        ({"device": "  "}, "field 'device': value error, must be a device index or name"),
        ({"min_speech_s": 2, "max_utterance_s": 2}, "field 'max_utterance_s': value error, must exceed"),
        ({"min_silence": 0.3}, "unknown field 'min_silence'"),
    ],
)
def test_bad_values_are_refused_naming_the_field(data, message):
    with pytest.raises(ConfigError) as err:
        load_config(AudioInputConfig, data, name="audio.yaml")
    assert str(err.value).startswith("audio.yaml: ") and message in str(err.value)


def test_a_numeric_device_name_becomes_an_index_and_a_name_stays():
    assert AudioInputConfig(device="3").device == 3
    assert AudioInputConfig(device="USB Audio").device == "USB Audio"


def test_yaml_file_config_builds_source_and_segmenter(tmp_path, speech_track):
    path = tmp_path / "audio.yaml"
    path.write_text(f"source: file\nfiles: [{speech_track.wav}]\nmin_silence_s: 0.3\nspeech_pad_s: 0.05\n")
    config = load_config(AudioInputConfig, path)
    source = open_source(config)
    assert isinstance(source, WavFileSource) and source.paths == [speech_track.wav]
    seg = UtteranceSegmenter.from_config(config, None)
    assert (seg.min_silence, seg.pad, seg.max_len) == (4800, 800, 160000)
