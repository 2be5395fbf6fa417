"""A human-readable summary of a bundle (``edgewise bundle inspect``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgewise.bundle import SIGNATURE_NAME, Bundle


def human_size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # unreachable


def _shape(spec: Any) -> str:
    return f"{spec.name} [{', '.join(str(d) for d in spec.shape)}] {spec.dtype}"


def _parity(parity: dict[str, Any]) -> str:
    """The parity record of an artifact as the export wrote it, and nothing it does not say.

    A copied third-party model (the Silero VAD) is recorded ``{"checked": false, "reason": ...}``:
    "not checked", with the reason; only an explicit ``passed: false`` is a failure.
    """
    if not parity:
        return "not checked"
    if parity.get("checked") is False:
        reason = parity.get("reason")
        return f"not checked ({reason})" if reason else "not checked"
    if "passed" not in parity:
        return "no verdict recorded"
    verdict = "passed" if parity["passed"] else "FAILED"
    parts = [verdict]
    diff, tol = parity.get("max_abs_diff"), parity.get("tolerance")
    if tol is not None:
        parts.append(
            f"max|diff| {diff:.2g} <= {tol:.2g}" if diff is not None else f"max|diff| n/a (tol {tol:.2g})"
        )
    metric = parity.get("metric")
    if metric and metric in parity:
        parts.append(
            f"{metric.upper()} {parity[metric]:.3f} (ref {parity.get(f'reference_{metric}', float('nan')):.3f})"
        )
    return ", ".join(parts)


def _integrity(bundle: Bundle, problems: list[str]) -> str:
    n = len(bundle.artifacts())
    if not problems:
        return f"all {n} artifact(s) match their recorded size and sha256"
    return f"FAILED: {len(problems)} of {n} artifact(s) do not match the manifest (listed below)"


def _variant(art: Any) -> str:
    quant = art.quant
    return f"{art.precision}-{quant}" if quant else art.precision


def describe_bundle(
    bundle: Bundle, source: str | Path | None = None, problems: list[str] | None = None
) -> str:
    """The manifest as a few readable lines; ``source`` is what the user named (folder or archive).

    ``problems`` are the artifact checks' findings (:meth:`Bundle.problems`); None leaves the
    integrity line out (not checked).
    """
    m = bundle.manifest
    sig = bundle.root / SIGNATURE_NAME
    if bundle.signature_verified:
        signature = "signed, verified"
    elif sig.is_file():
        try:
            key_id = json.loads(sig.read_text()).get("key_id", "?")
        except (ValueError, OSError):
            key_id = "unreadable"
        signature = f"signed by key {key_id} (not checked here; `edgewise bundle verify --key PUB`)"
    else:
        signature = "not signed"
    lines = [
        f"{m.name} {m.version}  task {m.task}  created {m.created.isoformat()}  (schema {m.schema_version})",
        f"  bundle:     {source or bundle.root}",
        f"  signature:  {signature}",
        *([f"  integrity:  {_integrity(bundle, problems)}"] if problems is not None else []),
        f"  labels:     {', '.join(m.labels) if m.labels else '-'}",
    ]
    if "log_mel" in m.preprocessing:
        f = m.log_mel()
        stats = "with training mean/std" if f.mean is not None else "without normalization stats"
        lines.append(
            f"  front-end:  log-mel {f.n_mels} bins, {f.sample_rate} Hz, window {f.win_length} / hop "
            f"{f.hop_length} samples, {stats}"
        )
    for role, entry in m.models.items():
        inputs = ", ".join(_shape(s) for s in entry.inputs)
        outputs = ", ".join(_shape(s) for s in entry.outputs)
        lines.append(f"  model {role}: {inputs} -> {outputs}")
        rows = [("path", "format", "precision", "size", "runtime", "parity")]
        for art in entry.artifacts:
            rows.append(
                (
                    art.path,
                    art.format,
                    _variant(art),
                    human_size(art.size_bytes),
                    art.runtime,
                    _parity(art.parity),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        for r in rows:
            lines.append("    " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    prov = m.provenance
    versions = prov.get("versions") or {}
    made_with = ", ".join(f"{k} {v}" for k, v in [("edgewise", prov.get("edgewise")), *versions.items()] if v)
    if prov.get("run"):
        lines.append(f"  from run:   {prov['run']}")
    if prov.get("corpus"):
        sha = prov.get("corpus_json_sha256")
        lines.append(f"  corpus:     {prov['corpus']}" + (f" (corpus.json sha256 {sha[:12]})" if sha else ""))
    if made_with:
        lines.append(f"  made with:  {made_with}")
    return "\n".join(lines)
