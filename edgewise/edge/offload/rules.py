"""When the device declines: one small function per task, each returning why it asks the cloud
(a sentence for the result's ``offload.why``) or None when the device's answer stands."""

from __future__ import annotations

from typing import Any

from edgewise.edge.offload.config import SerRule


def top_confidence(result: dict[str, Any]) -> float:
    probabilities = result.get("probabilities") or {}
    return max((float(p) for p in probabilities.values()), default=0.0)


def ser_why(result: dict[str, Any], rule: SerRule) -> tuple[str | None, str]:
    """(why it asks, or None; the sentence either way) for an SER result."""
    top = top_confidence(result)
    if top < rule.below:
        why = f"confidence {top:.3f} is below {rule.below:g}"
        return why, why
    return None, f"confidence {top:.3f} is at least {rule.below:g}"


def rec_why(args: dict[str, Any], top_k: int, beam: int) -> tuple[str | None, str]:
    """(why it asks, or None; the sentence) for a recommend request against the bundle's
    ``top_k`` and beam."""
    if args.get("candidates") == "cloud":
        why = "the request asks for the cloud's candidates"
        return why, why
    k, wanted_beam = args.get("k"), args.get("beam")
    if isinstance(k, int) and k > top_k:
        why = f"k {k} is above the bundle's top_k {top_k}"
        return why, why
    if isinstance(wanted_beam, int) and wanted_beam > beam:
        why = f"beam {wanted_beam} is above the bundle's beam {beam}"
        return why, why
    return None, f"k and beam within the bundle's (top_k {top_k}, beam {beam})"
