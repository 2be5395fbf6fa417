"""The audio input runs on devices: importing and using it must not pull in torch (nor silero_vad,
whose __init__ imports torch), and sounddevice/onnxruntime load only when used."""

from tests.edge.audio.conftest import run_python

IMPORT_ONLY = """
import sys
import edgewise.edge.audio
import edgewise.edge.audio.config, edgewise.edge.audio.resampler, edgewise.edge.audio.segmenter
import edgewise.edge.audio.sources, edgewise.edge.audio.vad
print(sorted(m for m in ('torch', 'silero_vad', 'sounddevice', 'onnxruntime') if m in sys.modules))
"""

USE_SILERO = """
import sys
import numpy as np
from edgewise.edge.audio import build_vad, find_silero_vad_onnx
assert find_silero_vad_onnx() is not None, 'silero-vad not installed'
vad = build_vad('silero')
assert type(vad).__name__ == 'SileroVAD', type(vad)
vad.probabilities(np.zeros(16000, dtype=np.float32))
print(sorted(m for m in ('torch', 'silero_vad') if m in sys.modules))
"""


def test_importing_the_audio_package_loads_neither_torch_nor_the_device_libraries():
    result = run_python(IMPORT_ONLY)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_running_the_silero_vad_does_not_import_torch_or_the_silero_package(silero_onnx):
    result = run_python(USE_SILERO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_the_check_can_fail(silero_onnx):
    # Guards the two tests above: importing the pip package's module does load torch.
    result = run_python("import sys, silero_vad; print('torch' in sys.modules)")
    assert result.returncode == 0 and result.stdout.strip() == "True", result.stdout + result.stderr
