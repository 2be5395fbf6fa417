"""The format table drives argument checking: valid combinations, clear errors, unavailable formats."""

from __future__ import annotations

import pytest

from edgewise.cli import build_parser, main
from edgewise.errors import ConfigError, MissingDependencyError
from edgewise.export.formats import (
    FORMATS,
    Variant,
    all_precisions,
    check_toolchains,
    override_tolerance,
    resolve_variants,
)


def test_every_row_is_complete():
    for name, row in FORMATS.items():
        assert row.name == name and row.suffix.startswith(".")
        assert row.precisions and set(row.precisions) <= {"fp32", "fp16", "int8"}
        assert set(row.devices) <= {"cpu", "gpu"}
        assert callable(row.export) and callable(row.runner) and callable(row.requires)
        for spec in row.precisions.values():
            assert spec.tolerance.atol > 0 and 0 < spec.tolerance.max_metric_drop < 0.05
            assert set(spec.calibrated_modes) <= set(spec.quant_modes)


def test_cli_choices_come_from_the_table():
    parser = build_parser()
    args = parser.parse_args(["export", "RUN", "--out", "X", "--format", "tflite", "--precision", "int8"])
    assert args.formats == ["tflite"] and args.precisions == ["int8"]
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "RUN", "--out", "X", "--format", "coreml"])
    assert all_precisions() == ("fp32", "fp16", "int8")


def test_variants_expand_int8_into_quantization_modes():
    variants = resolve_variants(["onnx"], ["fp32", "int8"], ["dynamic", "static"])
    assert [v.stem for v in variants] == ["fp32", "int8-dynamic", "int8-static"]
    assert [v.needs_calibration for v in variants] == [False, False, True]
    assert variants[2].artifact_path() == "models/ser.int8-static.onnx"
    assert resolve_variants(["onnx"], ["int8"])[0].quant == "dynamic"  # the format's first mode
    assert resolve_variants(["tensorrt"], ["int8"])[0].quant == "static"


@pytest.mark.parametrize(
    ("formats", "precisions", "quant", "message"),
    [
        (["onnx"], ["int4"], None, "onnx has no precision 'int4'"),
        (["tensorrt"], ["int8"], ["dynamic"], "tensorrt int8 has no quantization mode 'dynamic'"),
        (["coreml"], ["fp32"], None, "unknown format 'coreml'"),
        (["onnx"], ["fp32"], ["static"], "applies to int8 only"),
    ],
)
def test_bad_combinations_list_the_valid_ones(formats, precisions, quant, message):
    with pytest.raises(ConfigError) as err:
        resolve_variants(formats, precisions, quant)
    assert message in str(err.value)
    if "int8 only" not in message:
        assert "onnx: fp32, fp16, int8 (dynamic|static)" in str(err.value)
        assert "tensorrt: fp32, fp16, int8 (static)" in str(err.value)


def test_cli_refuses_a_bad_combination_with_exit_2(tiny_run, tmp_path, capsys):
    code = main(
        [
            "export",
            str(tiny_run),
            "--out",
            str(tmp_path),
            "--format",
            "tensorrt",
            "--quant",
            "dynamic",
            "--precision",
            "int8",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "tensorrt int8 has no quantization mode 'dynamic'" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_a_missing_tflite_toolchain_names_the_packages(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "litert_torch" else real(name, *a)
    )
    with pytest.raises(MissingDependencyError, match=r"litert-torch: pip install 'edgewise\[tflite\]'"):
        check_toolchains([Variant("tflite", "fp32")])


def test_quant_modes_apply_to_the_formats_that_have_them():
    variants = resolve_variants(["onnx", "tensorrt"], ["int8"], ["dynamic", "static"])
    assert [(v.format, v.quant) for v in variants] == [
        ("onnx", "dynamic"),
        ("onnx", "static"),
        ("tensorrt", "static"),
    ]


def test_tolerance_overrides_prefer_the_more_specific_key():
    static = Variant("onnx", "int8", "static")
    tol = override_tolerance(static, {"int8": 0.5, "int8-static": 0.7}, {"int8": 0.03})
    assert (tol.atol, tol.rtol, tol.max_metric_drop) == (0.7, 0.0, 0.03)
    assert override_tolerance(Variant("onnx", "fp32"), {"int8": 0.5}, {}) == Variant("onnx", "fp32").tolerance
