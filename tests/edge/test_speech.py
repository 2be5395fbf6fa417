"""The helpers ``edgewise tts`` and the daemon's ``tts`` command share: argument checks (each bad
argument is one message naming the field: that message is the command's ack), playback that says
why it did not play, and the bounded folder of spoken wavs."""

from __future__ import annotations

import os

import numpy as np
import pytest

from edgewise.edge.pipelines.tts import MAX_TEXT_CHARS
from edgewise.edge.speech import check_tts_args, keep_recent, play_audio
from edgewise.errors import ConfigError


def test_good_arguments_are_returned_as_text_options_and_play():
    text, options, play = check_tts_args(
        {"text": "Hello there.", "play": True, "seed": 7, "steps": 4, "length_scale": 1.2}
    )
    assert text == "Hello there."
    assert options == {"seed": 7, "steps": 4, "length_scale": 1.2}
    assert play is True


def test_only_text_is_required_and_play_defaults_to_false():
    assert check_tts_args({"text": "Hi."}) == ("Hi.", {}, False)


def test_an_integer_length_scale_is_taken_as_a_float():
    _, options, _ = check_tts_args({"text": "Hi.", "length_scale": 2})
    assert options["length_scale"] == 2.0 and isinstance(options["length_scale"], float)


@pytest.mark.parametrize(
    ("args", "field", "detail"),
    [
        ({}, "args.text", "required"),
        ({"text": None}, "args.text", "NoneType"),
        ({"text": 42}, "args.text", "int"),
        ({"text": ["a", "list"]}, "args.text", "list"),
        ({"text": "x" * (MAX_TEXT_CHARS + 1)}, "args.text", str(MAX_TEXT_CHARS)),
        ({"text": "Hi.", "play": "yes"}, "args.play", "'yes'"),
        ({"text": "Hi.", "play": 1}, "args.play", "1"),
        ({"text": "Hi.", "seed": -1}, "args.seed", "-1"),
        ({"text": "Hi.", "seed": True}, "args.seed", "True"),
        ({"text": "Hi.", "seed": 1.5}, "args.seed", "1.5"),
        ({"text": "Hi.", "seed": "3"}, "args.seed", "'3'"),
        ({"text": "Hi.", "steps": 0}, "args.steps", "between 1 and 64"),
        ({"text": "Hi.", "steps": 65}, "args.steps", "between 1 and 64"),
        ({"text": "Hi.", "length_scale": 0.1}, "args.length_scale", "0.1"),
        ({"text": "Hi.", "length_scale": float("nan")}, "args.length_scale", "nan"),
        ({"text": "Hi.", "volume": 3}, "volume", "unknown"),
    ],
)
def test_each_bad_argument_is_refused_naming_the_field(args, field, detail):
    with pytest.raises(ConfigError) as err:
        check_tts_args(args)
    message = str(err.value)
    assert field in message and detail in message
    assert "\n" not in message  # one line: it is an ack's error


def test_args_that_are_not_an_object_are_refused():
    with pytest.raises(ConfigError, match="args must be an object, got list"):
        check_tts_args(["text", "Hi."])


def test_keep_recent_keeps_the_newest_files(tmp_path):
    now = 1_700_000_000
    for i in range(6):  # explicit times: files written in one go can share a timestamp
        path = tmp_path / f"c{i}.wav"
        path.write_bytes(b"RIFF")
        os.utime(path, (now + i, now + i))
    (tmp_path / "notes.txt").write_text("not a wav: never removed")
    keep_recent(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c4.wav", "c5.wav", "notes.txt"]


def test_keep_recent_with_fewer_files_than_the_limit_removes_nothing(tmp_path):
    for i in range(2):
        (tmp_path / f"c{i}.wav").write_bytes(b"RIFF")
    keep_recent(tmp_path, 5)
    assert len(list(tmp_path.glob("*.wav"))) == 2


def test_play_audio_without_a_sound_card_says_why_instead_of_raising():
    """This machine has no sound card (no /dev/snd): sounddevice is installed, PortAudio finds no
    output device, and play_audio returns the reason. Where a sound card exists it plays
    (0.05 s of silence) and returns "played"."""
    if os.path.exists("/dev/snd"):
        pytest.skip("this machine has a sound card: the no-sound-card path cannot be shown here")
    result = play_audio(np.zeros(1102, dtype=np.float32), 22050)
    assert result.startswith("not played: ") and len(result) > len("not played: ")
