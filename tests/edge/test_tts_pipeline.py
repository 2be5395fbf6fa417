"""The torch-free TTS pipeline on the test bundle (:func:`tests.conftest.tts_bundle`, onnxruntime
on this CPU), and ``edgewise tts`` on top of it.

The voice is barely trained (30 steps): these tests check what the pipeline does with any voice
(audio format, streaming, chunking, seeds, timings) and with any text (the bad-input rules of the
README), not how it sounds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgewise.devices import load_profile
from edgewise.edge.pipelines.tts import (
    MAX_PIECE_WORDS,
    MAX_STEPS,
    MAX_TEXT_CHARS,
    TextError,
    TTSPipeline,
)
from edgewise.errors import ConfigError, DataError
from edgewise.tts_dsp import tts_log_mel
from tests.conftest import missing_tool

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
EDGEWISE = REPO / ".venv" / "bin" / "edgewise"
LONG_SENTENCE = (
    "The little robot rolled across the kitchen floor, stopped beside the open window, and told "
    "everyone in the house that the rain would stop before the evening train arrived at the station."
)
WORDS = ["morning", "river", "garden", "yellow", "window", "quiet", "paper", "station"]
WORDS += ["letter", "market", "orange", "silver", "table", "winter", "summer", "valley"]


def words(n: int, punctuation: bool) -> str:
    """``n`` ordinary words; with punctuation, a comma every 7 and a full stop every 15 words."""
    out = []
    for i in range(n):
        word = WORDS[i % len(WORDS)]
        if punctuation and i % 15 == 14:
            word += "."
        elif punctuation and i % 7 == 6:
            word += ","
        out.append(word)
    return " ".join(out) + "."


def log_mel_diff(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.abs(tts_log_mel(a[:n]) - tts_log_mel(b[:n])).mean())


def onnx_profile():
    """x86-local running the ONNX voice (fp32 first): the chunking checks below compare whole and
    chunked decoding, which a fixed-length TFLite flow tiles differently (its own tests cover it)."""
    from edgewise.devices import RuntimeChoice

    return load_profile("x86-local").model_copy(
        update={"task_runtimes": {"tts": [RuntimeChoice(format="onnx", precision="fp32")]}}
    )


@pytest.fixture(scope="module")
def pipeline(tts_bundle):
    return TTSPipeline.from_bundle(tts_bundle, onnx_profile(), threads=1)


def test_x86_local_runs_the_tflite_int8_voice_with_the_onnx_encoder_and_it_sounds_like_onnx(
    tts_bundle, pipeline
):
    tflite = TTSPipeline.from_bundle(tts_bundle, load_profile("x86-local"), threads=1)
    try:
        picked = {role: rt.artifact.path for role, rt in tflite.runtimes.items()}
        assert picked == {
            "tts_encoder": "models/tts_encoder.fp32.onnx",
            "tts_flow": "models/tts_flow.int8-dynamic.tflite",
            "vocoder": "models/vocoder.int8-dynamic.tflite",
        }
        audio = tflite.synthesize(LONG_SENTENCE, seed=1).audio
        reference = pipeline.synthesize(LONG_SENTENCE, seed=1).audio
        assert len(audio) == len(reference)  # the same encoder: the same durations
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0
        assert log_mel_diff(audio, reference) < 0.5  # int8 graphs: close, not equal
    finally:
        tflite.close()


# -- audio and timings -------------------------------------------------------------------------


def test_synthesize_gives_finite_float32_audio_at_22050_hz_in_whole_hops(pipeline):
    utt = pipeline.synthesize("The weather is nice today.")
    assert utt.sample_rate == pipeline.sample_rate == 22050
    assert utt.audio.dtype == np.float32 and utt.audio.ndim == 1
    assert utt.audio.size > 0 and utt.audio.size % 256 == 0  # one hop (256 samples) per mel frame
    assert np.isfinite(utt.audio).all() and np.abs(utt.audio).max() <= 1.0
    assert utt.seconds == utt.audio.size / 22050


def test_synthesize_reports_the_timings_of_each_stage(pipeline):
    utt = pipeline.synthesize("The weather is nice today.")
    t = utt.timings
    for stage in ("frontend", "encoder", "decoder", "vocoder", "first_audio", "total", "rtf"):
        assert t[stage] > 0, stage
    assert t["frontend"] + t["encoder"] + t["decoder"] + t["vocoder"] <= t["total"] * 1.01
    assert t["first_audio"] <= t["total"]
    assert t["rtf"] == pytest.approx(t["total"] / utt.seconds)
    assert set(utt.to_dict()["timings"]) == set(t)


def test_a_long_sentence_streams_in_several_chunks_the_first_before_the_rest(pipeline):
    timings: dict[str, float] = {}
    chunks = list(pipeline.stream(LONG_SENTENCE, timings=timings))
    assert len([c for c in chunks if c.size]) > 2
    assert len(chunks[0]) < sum(len(c) for c in chunks) / 2  # the first chunk is a short one
    assert timings["first_audio"] < timings["total"]
    assert all(c.dtype == np.float32 and np.isfinite(c).all() for c in chunks)


def test_streamed_chunks_join_into_the_synthesized_utterance(pipeline):
    joined = np.concatenate(list(pipeline.stream(LONG_SENTENCE, seed=3)))
    np.testing.assert_array_equal(joined, pipeline.synthesize(LONG_SENTENCE, seed=3).audio)


def test_chunked_decoding_matches_decoding_each_sentence_whole(pipeline):
    """Chunks start on multiples of the decoder's attention window (block-local attention) and
    carry one window of context on each side, more than the convolutions reach, so streaming
    changes the audio only at float rounding. Measured on the test voice: log-mel mean |diff|
    5e-5 and max sample |diff| 8e-5, against 0.22 log-mel between two seeds; the bounds (0.01 and
    1e-3) sit 100x above the rounding and 20x below "different audio"."""
    chunked = pipeline.synthesize(LONG_SENTENCE, seed=1).audio
    whole = pipeline.synthesize(LONG_SENTENCE, seed=1, chunked=False).audio
    assert len(chunked) == len(whole)  # same durations, same noise: same length
    assert log_mel_diff(chunked, whole) < 0.01
    assert np.abs(chunked - whole).max() < 1e-3


def test_the_same_seed_gives_the_same_audio_and_another_seed_other_audio(pipeline):
    a = pipeline.synthesize("Good evening, everyone.", seed=11).audio
    b = pipeline.synthesize("Good evening, everyone.", seed=11).audio
    c = pipeline.synthesize("Good evening, everyone.", seed=12).audio
    np.testing.assert_array_equal(a, b)
    assert log_mel_diff(a, c) > 0.05  # measured about 0.2 on the test voice


# -- text: the bad-input rules ----------------------------------------------------------------


@pytest.mark.parametrize("text", ["", " ", "   \n\t  "])
def test_empty_or_whitespace_text_is_a_text_error(pipeline, text):
    with pytest.raises(TextError, match="text is empty"):
        pipeline.synthesize(text)


def test_a_text_error_is_a_data_error_the_cli_reports_with_exit_2():
    assert issubclass(TextError, DataError)


@pytest.mark.parametrize(
    ("text", "shown"),
    [("😀🎉👍", "😀"), ("你好世界", "你"), ("Привет мир", "П"), ("مرحبا", "م")],
)
def test_text_with_nothing_speakable_is_a_text_error_naming_what_was_dropped(pipeline, text, shown):
    with pytest.raises(TextError) as err:
        pipeline.synthesize(text)
    message = str(err.value)
    assert "nothing speakable" in message and "dropped" in message and shown in message


def test_emoji_inside_text_are_dropped_and_reported_and_the_rest_is_spoken(pipeline):
    utt = pipeline.synthesize("I love this 😀 song 🎉 so much.")
    assert utt.audio.size > 0
    assert utt.dropped == ["😀", "🎉"]
    assert any("dropped 2 character" in w for w in utt.warnings)
    assert "😀" not in utt.spoken_text and "song" in utt.spoken_text


def test_ssml_like_markup_is_not_spoken(pipeline):
    utt = pipeline.synthesize('<speak>Hello <break time="1s"/> <emphasis>world</emphasis>.</speak>')
    assert "<" not in utt.spoken_text and ">" not in utt.spoken_text
    assert "break" not in utt.spoken_text and "emphasis" not in utt.spoken_text
    assert "Hello" in utt.spoken_text and "world" in utt.spoken_text
    assert utt.audio.size > 0


def test_numbers_and_currency_are_spelled_out(pipeline):
    utt = pipeline.synthesize("It costs $12.50 and 3 apples weigh 42 grams.")
    assert not any(ch.isdigit() for ch in utt.spoken_text)
    assert "$" not in utt.spoken_text
    for word in ("twelve", "dollars", "fifty", "cents", "three", "forty"):
        assert word in utt.spoken_text, (word, utt.spoken_text)


@pytest.mark.parametrize("punctuation", [True, False])
def test_three_hundred_words_are_cut_into_many_pieces_and_spoken(pipeline, punctuation):
    text = words(300, punctuation)
    spoken, dropped, pieces, warnings = pipeline.prepare(text)
    assert len(pieces) >= 300 // MAX_PIECE_WORDS
    assert not dropped and not warnings
    timings: dict[str, float] = {}
    chunks = list(pipeline.stream(text, timings=timings, steps=1))
    audio = np.concatenate(chunks)
    assert len(chunks) > len(pieces)  # every piece streams, and a long piece in several chunks
    assert audio.size > 0 and np.isfinite(audio).all()


def test_text_over_the_length_limit_is_a_text_error(pipeline):
    with pytest.raises(TextError, match=f"limit is {MAX_TEXT_CHARS}"):
        pipeline.synthesize("a" * (MAX_TEXT_CHARS + 1))


def test_text_that_is_not_a_string_is_a_text_error(pipeline):
    with pytest.raises(TextError, match="must be a string, got int"):
        pipeline.synthesize(42)


@pytest.mark.parametrize(
    ("option", "value"),
    [("steps", 0), ("steps", MAX_STEPS + 1), ("steps", 2.5), ("seed", -1), ("seed", True)],
)
def test_out_of_range_steps_or_seed_are_refused_naming_the_option(pipeline, option, value):
    with pytest.raises(ConfigError, match=f"{option} must be .*got {value!r}"):
        pipeline.synthesize("Hello.", **{option: value})


def test_the_pipeline_runs_with_the_system_espeak_ng_phonemizer(tts_bundle):
    if shutil.which("espeak-ng") is None:
        missing_tool("espeak-ng is not installed (apt install espeak-ng)")
    pipe = TTSPipeline.from_bundle(tts_bundle, load_profile("x86-local"), threads=1, phonemizer="espeak-ng")
    assert pipe.phonemizer.backend == "espeak-ng"
    utt = pipe.synthesize("Hello there, how are you?")
    assert utt.audio.size > 0 and np.isfinite(utt.audio).all()


def test_the_pipeline_runs_without_importing_torch(tts_bundle):
    code = (
        "import sys\n"
        "from edgewise.devices import load_profile\n"
        "from edgewise.edge.pipelines.tts import TTSPipeline\n"
        f"pipe = TTSPipeline.from_bundle({str(tts_bundle)!r}, load_profile('x86-local'), threads=1)\n"
        "assert pipe.synthesize('Hello.').audio.size > 0\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# -- edgewise tts ------------------------------------------------------------------------------


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(EDGEWISE), *args], input=stdin, capture_output=True, text=True, timeout=120, cwd=REPO
    )


def test_cli_writes_a_22050_hz_pcm16_wav_and_prints_the_timings_as_json(tts_bundle, tmp_path):
    out = tmp_path / "hello.wav"
    done = cli(
        "tts", str(tts_bundle), "Hello from the device.", "--out", str(out), "--json", "--threads", "1"
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    info = sf.info(out)
    assert info.samplerate == 22050 and info.channels == 1 and info.subtype == "PCM_16"
    assert info.frames / 22050 == pytest.approx(result["audio_seconds"], abs=1e-3)
    assert result["timings"]["first_audio"] > 0 and result["timings"]["rtf"] > 0
    assert result["out"] == str(out) and result["spoken_text"] == "Hello from the device."


def test_cli_reads_the_text_from_stdin(tts_bundle, tmp_path):
    out = tmp_path / "stdin.wav"
    done = cli("tts", str(tts_bundle), "-", "--out", str(out), "--json", stdin="Read me from a pipe.\n")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["spoken_text"] == "Read me from a pipe."
    assert sf.info(out).frames > 0


def test_cli_empty_text_exits_2_with_one_line_and_no_traceback(tts_bundle, tmp_path):
    out = tmp_path / "empty.wav"
    done = cli("tts", str(tts_bundle), "   ", "--out", str(out))
    assert done.returncode == 2
    assert "text is empty" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_without_out_or_play_exits_2_saying_where_audio_goes(tts_bundle):
    done = cli("tts", str(tts_bundle), "Hello.")
    assert done.returncode == 2
    assert "--out" in done.stderr and "--play" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("flag", "value", "expected"), [("--seed", "-1", "--seed must be"), ("--steps", "0", "--steps must be")]
)
def test_cli_out_of_range_options_exit_2_naming_the_flag(tts_bundle, tmp_path, flag, value, expected):
    done = cli("tts", str(tts_bundle), "Hello.", "--out", str(tmp_path / "x.wav"), flag, value)
    assert done.returncode == 2 and expected in done.stderr and "Traceback" not in done.stderr


def test_cli_out_in_a_missing_folder_exits_2_before_speaking(tts_bundle, tmp_path):
    done = cli("tts", str(tts_bundle), "Hello.", "--out", str(tmp_path / "nowhere" / "x.wav"))
    assert done.returncode == 2 and "does not exist" in done.stderr and "Traceback" not in done.stderr


def test_a_bundle_of_another_task_is_refused_as_not_a_voice(tts_bundle, tmp_path):
    other = tmp_path / "not-a-voice"
    shutil.copytree(tts_bundle, other)
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "task": "ser"}))
    with pytest.raises(ConfigError, match="'ser' bundle, not a voice"):
        TTSPipeline.from_bundle(other, load_profile("x86-local"))
