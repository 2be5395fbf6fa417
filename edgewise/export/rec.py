"""``edgewise export RUN`` for a rec run: the lazy decoder-only generator in, a verified ``rec`` bundle out.

    read the run (merged weights, semantic IDs) and its data set's leave-last-out split
    -> two graphs (ONNX fp32, opset 18, dynamic batch, beams, history and cache lengths; int8 =
       dynamic quantization of both)
         rec_context   history -> k_g, v_g, mask_g per K/V group   (once per request)
         rec_decoder   tokens, level, context, past K/V -> logits, present K/V   (once per level)
    -> per-graph parity against PyTorch on validation users' histories: every input of a real
       beam search (batch of :data:`PARITY_USERS` users, ``beam`` beams), max |diff| of every output;
       a graph out of tolerance stops the export here
    -> device reference sets (:func:`edgewise.export.reference.attach_graph_references`): the graphs'
       inputs and PyTorch's outputs on :data:`REFERENCE_USERS` users, one request each, as the
       device runs it; each artifact is checked on them here too
    -> end to end, per precision: the device's numpy beam search over the ONNX graphs
       (:func:`edgewise.edge.pipelines.rec.beam_search`) against PyTorch's
       :func:`~edgewise.cloud.models.rec.beam.beam_search` on the validation users: fp32 must give
       the same top-k for at least :data:`MIN_SAME_TOPK` of them with scores within
       :data:`SCORE_ATOL`; int8 may lose at most ``max_ndcg_drop`` NDCG@10 (HR@10, NDCG@10 and the
       top-k overlap are recorded for both)
    -> gate: every artifact and precision within tolerance, or nothing is written (unless --no-gate)
    -> BundleWriter: task "rec", preprocessing.rec (max_len, level sizes, beam, top_k, n_items, the
       decoder's cache layout, and the files rec/semantic_ids.npz, rec/prefix_trie.npz and
       rec/items.json, each bound by its sha256), signature

Only the lazy model (``kind: lazy``) ships: its context K/V are computed once per request and
shared by groups of decoder layers, which is what makes it cheap enough for a device. An
encoder-decoder or SASRec run is refused with an error that says so.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.bundle import BundleWriter, sha256_file
from edgewise.edge.pipelines.rec import ROLES, Beams, RecSettings, beam_search
from edgewise.export.errors import ExportError
from edgewise.export.pipeline import _check_sign_key, _versions, step

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")
GRAPH_ATOL = {"fp32": 1e-3, "int8": None}  # max |diff| of each graph's outputs; int8: end to end
MIN_SAME_TOPK = 0.98  # fp32: share of validation users whose top-k equals PyTorch's, in order
SCORE_ATOL = 1e-3  # fp32: max |diff| of the top-k scores (summed log-probabilities) where they agree
MAX_NDCG_DROP = 0.01  # int8: NDCG@10 on the validation users may be at most this much below PyTorch's
PARITY_USERS = 16  # validation users of the per-graph parity check (one batch)
REFERENCE_USERS = 2  # validation users of the device reference sets (one request each): shortest, longest
# users per beam search in the end-to-end check: one, as the device runs it (int8 quantizes each
# call's activations by their own range, so a batch of users would rank differently than one)
BATCH = 1
POPULAR = 100  # most popular training items shipped for an empty history


@dataclass
class RecExportOptions:
    out: Path
    precisions: list[str] = field(default_factory=lambda: list(PRECISIONS))
    name: str | None = None
    version: str = "1.0.0"
    data: Path | None = None
    sign_key: Path | None = None
    gate: bool = True
    gate_users: int = 0  # validation users of the end-to-end check (0: all)
    max_ndcg_drop: float = MAX_NDCG_DROP
    threads: int = 2
    overwrite: bool = False


# -- graphs -----------------------------------------------------------------------------------


def names(model: Any) -> dict[str, list[str]]:
    """The graphs' tensor names: context (per group k, v, mask), past and present (per layer k, v)."""
    layers = model.config.n_layers
    return {
        "context": [f"{n}_{g}" for g in range(model.n_groups) for n in ("k", "v", "mask")],
        "past": [f"past_{n}_{i}" for i in range(layers) for n in ("k", "v")],
        "present": [f"present_{n}_{i}" for i in range(layers) for n in ("k", "v")],
    }


def graphs(model: Any) -> dict[str, Any]:
    """role -> the export-only module of each graph (the model's own layers; no maths of their own
    beyond reading BOS at level 0, which :meth:`GenerativeRec.step` does with ``tokens=None``)."""
    import torch
    from torch import nn

    class Context(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, history):
            ctx = self.m.context(history, every_position=False)
            out = []
            for g in range(self.m.n_groups):  # the layers of a group share one set of K/V
                layer = g * self.m.config.kv_group
                out += [ctx.kv[layer][0], ctx.kv[layer][1], ctx.masks[layer]]
            return tuple(out)

    class DecoderStep(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, tokens, level, *flat):
            m, groups = self.m, self.m.n_groups
            ctx, past = flat[: 3 * groups], flat[3 * groups :]
            x = m.embed.tokens(tokens).unsqueeze(2)
            x = torch.where(level.view(1, 1, 1, 1) == 0, m.bos.expand_as(x), x) + m.level_emb.weight[level]
            presents = []
            for i, block in enumerate(m.blocks):
                g = 3 * (i // m.config.kv_group)
                x, (k, v) = block(x, ctx[g], ctx[g + 1], ctx[g + 2], (past[2 * i], past[2 * i + 1]))
                presents += [k, v]
            return (m.logits(x[:, :, 0]), *presents)

    return {"rec_context": Context(model).eval(), "rec_decoder": DecoderStep(model).eval()}


def graph_io(model: Any) -> dict[str, tuple[list[dict], list[dict]]]:
    """role -> (inputs, outputs) as the manifest records them."""
    cfg, n = model.config, names(model)
    hd = cfg.d_model // cfg.n_heads
    f32, i64 = "float32", "int64"

    def ctx(name: str) -> dict:
        if name.startswith("mask"):
            return {"name": name, "shape": ["batch", cfg.n_heads, 1, "history"], "dtype": f32}
        return {"name": name, "shape": ["batch", cfg.n_kv_heads, "history", hd], "dtype": f32}

    return {
        "rec_context": (
            [{"name": "history", "shape": ["batch", "history"], "dtype": i64}],
            [ctx(name) for name in n["context"]],
        ),
        "rec_decoder": (
            [{"name": "tokens", "shape": ["batch", "beams"], "dtype": i64},
             {"name": "level", "shape": [1], "dtype": i64},
             *[ctx(name) for name in n["context"]],
             *[{"name": name, "shape": ["rows", cfg.n_heads, "past", hd], "dtype": f32} for name in n["past"]]],
            [{"name": "logits", "shape": ["batch", "beams", model.vocab], "dtype": f32},
             *[{"name": name, "shape": ["rows", cfg.n_heads, "present", hd], "dtype": f32}
               for name in n["present"]]],
        ),
    }  # fmt: skip


def export_graphs(modules: dict[str, Any], model: Any, workdir: Path) -> dict[str, Path]:
    """Both graphs as portable fp32 ONNX files with every batch and length axis dynamic."""
    import torch

    from edgewise.export.onnx_export import export_role_graphs

    auto = torch.export.Dim.AUTO  # rows = batch * beams, which no named Dim can express
    cfg, n = model.config, names(model)
    hd = cfg.d_model // cfg.n_heads
    g = torch.Generator().manual_seed(0)
    history = torch.randint(1, model.n_items + 1, (2, 9), generator=g)
    history[0, :3] = 0  # left padding, as the device sends
    with torch.no_grad():  # contiguous: the exporter would otherwise trace the context's strides
        ctx = [t.contiguous() for t in modules["rec_context"](history)]
    b, q, p = 2, 3, 2  # all different, and none 0 or 1, so no axis is specialised
    tokens = torch.randint(0, model.vocab, (b, q), generator=g)
    past = [torch.randn(b * q, cfg.n_heads, p, hd, generator=g) for _ in n["past"]]
    ctx_dims = [
        {0: auto, 3: auto} if name.startswith("mask") else {0: auto, 2: auto} for name in n["context"]
    ]
    examples = {
        "rec_context": ((history,), ({0: auto, 1: auto},)),
        "rec_decoder": (
            (tokens, torch.tensor([p]), *ctx, *past),
            ({0: auto, 1: auto}, None, (*ctx_dims, *[{0: auto, 2: auto} for _ in past])),
        ),
    }
    return export_role_graphs(modules, examples, graph_io(model), workdir)


class TorchGraph:
    """A PyTorch graph module run like an ONNX backend (numpy by input name in, numpy list out);
    ``record`` keeps every input it is given (the graphs' cases)."""

    def __init__(self, module: Any, inputs: list[str], outputs: list[str], record: bool = False) -> None:
        self.module, self.input_names, self.output_names = module, inputs, outputs
        self.calls: list[dict[str, np.ndarray]] | None = [] if record else None

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        ordered = {name: np.ascontiguousarray(feed[name]) for name in self.input_names}
        if self.calls is not None:
            self.calls.append({name: x.copy() for name, x in ordered.items()})
        with torch.no_grad():
            out = self.module(*(torch.from_numpy(x) for x in ordered.values()))
        return [t.numpy() for t in out]


def graph_cases(
    modules: dict[str, Any],
    model: Any,
    settings: RecSettings,
    trie: Any,
    histories: list[np.ndarray],
    beam: int,
) -> dict[str, list[dict[str, np.ndarray]]]:
    """role -> the inputs each graph gets in a real beam search over ``histories`` (each (B, T))."""
    io = graph_io(model)
    torch_graphs = {
        role: TorchGraph(
            modules[role], [i["name"] for i in io[role][0]], [o["name"] for o in io[role][1]], True
        )
        for role in ROLES
    }
    for history in histories:
        beam_search(torch_graphs["rec_context"], torch_graphs["rec_decoder"], history, trie, settings, beam)
    return {role: g.calls or [] for role, g in torch_graphs.items()}


def graph_parity(
    modules: dict[str, Any],
    files: dict[str, Path],
    cases: dict[str, list[dict]],
    atol: float | None,
    threads: int,
) -> dict[str, dict[str, Any]]:
    """Per role, every output's max |diff| against its PyTorch module on ``cases``, graded on ``atol``
    (None: recorded, not graded): ``passed``, ``max_abs_diff`` (the worst output's), ``outputs``
    (name -> max |diff|) and ``reason`` when it failed."""
    from edgewise.edge.backends import OnnxBackend
    from edgewise.edge.reference import GraphReferenceSet, OutputCheck
    from edgewise.export.reference import expected_outputs

    result = {}
    for role, path in files.items():
        backend = OnnxBackend(path, threads, single_io=False)
        expected = expected_outputs(modules[role], cases[role], backend.output_names)
        checks = [OutputCheck(name, np.inf if atol is None else atol) for name in backend.output_names]
        check = GraphReferenceSet(cases[role], expected, checks, f"{role} parity").compare(backend)
        diffs = {name: r["max_abs_diff"] for name, r in check["outputs"].items()}
        result[role] = {
            "passed": check["passed"],
            "max_abs_diff": max(diffs.values(), default=None),
            "outputs": {name: round(d, 7) for name, d in diffs.items()},
            **({"reason": check["reason"]} if "reason" in check else {}),
        }
    return result


# -- end to end -------------------------------------------------------------------------------


def torch_beams(model: Any, trie: Any, histories: np.ndarray, beam: int) -> Beams:
    """PyTorch's beam search (the reference the issue names) on padded histories, in batches."""
    import torch

    from edgewise.cloud.models.rec.beam import TorchTrie
    from edgewise.cloud.models.rec.beam import beam_search as torch_search

    ttrie = TorchTrie.from_trie(trie)
    parts = [
        torch_search(model, torch.from_numpy(histories[i : i + 256]), ttrie, beam)
        for i in range(0, len(histories), 256)
    ]
    return Beams(
        np.concatenate([p.items for p in parts]),
        np.concatenate([p.scores for p in parts]).astype(np.float32),
        np.concatenate([p.codes for p in parts]),
        0.0,
        0.0,
    )


def edge_beams(
    context: Any, decoder: Any, histories: np.ndarray, trie: Any, settings: RecSettings, beam: int
) -> Beams:
    parts = [
        beam_search(context, decoder, histories[i : i + BATCH], trie, settings, beam)
        for i in range(0, len(histories), BATCH)
    ]
    return Beams(
        np.concatenate([p.items for p in parts]),
        np.concatenate([p.scores for p in parts]),
        np.concatenate([p.codes for p in parts]),
        sum(p.context_ms for p in parts),
        sum(p.decode_ms for p in parts),
    )


def compare_beams(got: Beams, ref: Beams, targets: np.ndarray, k: int) -> dict[str, Any]:
    """Top-k agreement and ranking metrics of ``got`` against ``ref`` on the same users."""
    from edgewise.cloud.rec.metrics import ranking_metrics

    a, b = got.items[:, :k], ref.items[:, :k]
    same = (a == b).all(axis=1)
    overlap = [len(set(x[x >= 0]) & set(y[y >= 0])) / k for x, y in zip(a, b)]
    diffs = np.abs(got.scores[same, :k] - ref.scores[same, :k])
    finite = np.isfinite(diffs)
    ks = tuple(x for x in (5, 10) if x <= min(got.items.shape[1], ref.items.shape[1]))
    mine = ranking_metrics(got.items, targets, ks=ks)
    theirs = ranking_metrics(ref.items, targets, ks=ks)
    return {
        "users": int(len(targets)),
        "k": k,
        "same_topk": round(float(same.mean()), 5),
        "topk_overlap": round(float(np.mean(overlap)), 5),
        "score_max_abs_diff": round(float(diffs[finite].max()), 7) if finite.any() else 0.0,
        "metrics": {key: round(v, 5) for key, v in mine.items()},
        "metrics_pytorch": {key: round(v, 5) for key, v in theirs.items()},
        "ndcg@10_drop": round(theirs.get("ndcg@10", 0.0) - mine.get("ndcg@10", 0.0), 5),
        "hr@10_drop": round(theirs.get("hr@10", 0.0) - mine.get("hr@10", 0.0), 5),
    }


# -- export -----------------------------------------------------------------------------------


def export_rec(run: str | Path, opts: RecExportOptions) -> dict[str, Any]:
    import torch

    from edgewise.cloud.models.rec.config import RecTrainConfig
    from edgewise.cloud.train.rec_job import RecData, load_rec_run, pad_left
    from edgewise.cloud.train.step_loop import read_step_run
    from edgewise.config import load_config, read_yaml
    from edgewise.edge.backends import OnnxBackend
    from edgewise.export.onnx_export import minify, quantize_int8_dynamic, set_model_metadata
    from edgewise.export.reference import attach_graph_references
    from edgewise.export.tts import _refuse
    from edgewise.rec_ids import CATALOGUE_DIGEST_KEY, PrefixTrie, catalogue_digest

    run = Path(run)
    opts = replace(opts, precisions=list(dict.fromkeys(opts.precisions)))
    bad = sorted(set(opts.precisions) - set(PRECISIONS))
    if bad or not opts.precisions:
        raise ExportError(
            f"rec export: precision(s) {bad} not supported; choose from {', '.join(PRECISIONS)}"
        )
    if opts.gate_users < 0:
        raise ExportError(f"rec export: gate users must be 0 (all) or more, got {opts.gate_users}")
    if opts.sign_key is not None:
        _check_sign_key(opts.sign_key)
    torch.set_num_threads(max(1, opts.threads))
    with step("read run"):
        kind = read_step_run(run, "rec").get("kind")
        if kind != "lazy":
            raise ExportError(
                f"{run} is a {kind!r} rec run: only the lazy decoder-only model (kind 'lazy') ships "
                "to devices; train one with edgewise train rec --config lazy-small"
            )
        model, info = load_rec_run(run)
        cfg = load_config(RecTrainConfig, read_yaml(run / "config.yaml"), name=str(run / "config.yaml"))
        ids = info["semantic_ids"]
        data = RecData(cfg, opts.data or info["data"]["path"], teacher_ids=ids)
        if data.n_items != info["n_items"]:
            raise ExportError(
                f"{run}: the run knows {info['n_items']} items, the data set has {data.n_items}"
            )
        items = json.loads((run / "items.json").read_text())
    trie = PrefixTrie.build(ids)
    mcfg = model.config
    beam, top_k = cfg.beam, min(cfg.top_k, cfg.beam)
    head_dim = mcfg.d_model // mcfg.n_heads
    modules = graphs(model)
    n = names(model)
    name = opts.name or str(info.get("name") or "rec")
    valid = data.valid_history[: opts.gate_users or None]
    targets = data.valid_target[: len(valid)]
    histories = pad_left(valid, mcfg.max_len)
    counts = np.bincount(np.concatenate(data.train) - 1, minlength=data.n_items)
    popular = np.argsort(-counts, kind="stable")[:POPULAR]
    report: dict[str, Any] = {"graphs": {}, "end_to_end": {}}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgewise-rec-export-") as tmp:
        tmp = Path(tmp)
        tables = {
            "semantic_ids": ids.save(tmp / "semantic_ids.npz"),
            "prefix_trie": trie.save(tmp / "prefix_trie.npz"),
            "items": tmp / "items.json",
        }
        tables["items"].write_text(
            json.dumps({"ids": items["ids"], "titles": items["titles"], "popular": popular.tolist()}) + "\n"
        )
        files_record = {
            key: {"path": f"rec/{path.name}", "sha256": sha256_file(path), "size_bytes": path.stat().st_size}
            for key, path in tables.items()
        }
        preprocessing = {
            "rec": {
                "model": "lazy",
                "max_len": mcfg.max_len,
                "level_sizes": list(model.level_sizes),
                "vocab": model.vocab,
                "n_items": data.n_items,
                "beam": beam,
                "top_k": top_k,
                "decoder": {
                    "layers": mcfg.n_layers, "heads": mcfg.n_heads, "head_dim": head_dim,
                    "groups": model.n_groups, "kv_group": mcfg.kv_group, "kv_heads": mcfg.n_kv_heads,
                },
                "history": "1-based item indices (items.json order + 1), the most recent max_len, "
                "left-padded with 0 to max_len",
                "files": files_record,
            }
        }  # fmt: skip
        settings = RecSettings.from_manifest(preprocessing, "preprocessing")
        writer = BundleWriter(
            opts.out, name=name, version=opts.version, task="rec", preprocessing=preprocessing,
            provenance={
                "run": str(run.resolve()), "model_sha256": sha256_file(run / "model.safetensors"),
                "data": str(opts.data or info["data"]["path"]), "data_summary": info.get("data"),
                "teacher": info.get("teacher"),
                "training": info.get("provenance"), "trained_with": info.get("trained_with"),
                "metrics": _run_metrics(run),
                "parity_gate": "enforced" if opts.gate else "off (--no-gate)", "versions": _versions(),
            },
            overwrite=opts.overwrite,
        )  # fmt: skip
        with writer:
            files = {"fp32": export_graphs(modules, model, tmp)}
            if "int8" in opts.precisions:
                files["int8"] = {}
                quant = {}
                for role, src in files["fp32"].items():
                    with step(f"quantize {role} onnx int8 (dynamic)"):
                        files["int8"][role] = tmp / f"{role}.int8-dynamic.onnx"
                        quant[role] = quantize_int8_dynamic(src, files["int8"][role])
                        minify(files["int8"][role])
            stamp = {CATALOGUE_DIGEST_KEY: catalogue_digest(ids, items["ids"])}
            for by_role in files.values():  # the graphs say which catalogue they were trained on
                for path in by_role.values():
                    set_model_metadata(path, stamp)
            shipped = {p: files[p] for p in opts.precisions}
            with step(f"graph cases ({PARITY_USERS} + {REFERENCE_USERS} validation users, beam {beam})"):
                parity_cases = graph_cases(modules, model, settings, trie, [histories[:PARITY_USERS]], beam)
                reference_cases = graph_cases(
                    modules,
                    model,
                    settings,
                    trie,
                    [histories[i : i + 1] for i in reference_users(valid)],
                    beam,
                )
            for precision, by_role in shipped.items():
                with step(f"parity {precision} (each graph)"):
                    checks = graph_parity(modules, by_role, parity_cases, GRAPH_ATOL[precision], opts.threads)
                report["graphs"][precision] = checks
                failures += [
                    f"{role} {precision}: {c['reason']}" for role, c in checks.items() if not c["passed"]
                ]
            with step("reference sets for the device's parity check"):
                device_refs = attach_graph_references(
                    modules, shipped, [], tmp, atol={p: GRAPH_ATOL[p] for p in shipped},
                    threads=opts.threads, cases=reference_cases,
                )  # fmt: skip
            report["device_reference"] = device_refs.report()
            failures += device_refs.failures
            if failures and opts.gate:
                _refuse(report, failures, "end to end not checked")
            with step(f"reference (PyTorch beam search, {len(histories)} validation users, beam {beam})"):
                ref = torch_beams(model, trie, histories, beam)
            for precision, by_role in shipped.items():
                with step(f"parity {precision} (end to end, {len(histories)} users)"):
                    backends = {r: OnnxBackend(p, opts.threads, single_io=False) for r, p in by_role.items()}
                    got = edge_beams(
                        backends["rec_context"], backends["rec_decoder"], histories, trie, settings, beam
                    )
                    e2e = compare_beams(got, ref, targets, top_k)
                report["end_to_end"][precision] = e2e
                log.info("%s end to end: %s", precision, e2e)
                failures += _e2e_failures(precision, e2e, opts.max_ndcg_drop)
            if failures and opts.gate:
                _refuse(report, failures)
            params = int(sum(p.numel() for p in model.parameters()))
            for role in ROLES:
                inputs, outputs = graph_io(model)[role]
                extra = (
                    {"parameters": params, "tensors": n}
                    if role == "rec_decoder"
                    else {"groups": model.n_groups}
                )
                writer.add_model(role, inputs=inputs, outputs=outputs, extra=extra)
                for precision, by_role in shipped.items():
                    stem = "fp32" if precision == "fp32" else "int8-dynamic"
                    passed = not any(f.startswith((f"{role} {precision}", f"{precision}:")) for f in failures)
                    art_extra: dict[str, Any] = {"reference": device_refs.extra[role][precision]}
                    if precision == "int8":
                        art_extra.update(quant[role])
                    writer.add_artifact(
                        role, by_role[role], f"models/{role}.{stem}.onnx", format="onnx", precision=precision,
                        runtime="onnxruntime",
                        parity={"checked": True, "passed": passed, "tolerance": GRAPH_ATOL[precision],
                                "max_abs_diff": report["graphs"][precision][role]["max_abs_diff"],
                                "end_to_end": report["end_to_end"][precision]},
                        extra=art_extra,
                    )  # fmt: skip
            for key, path in tables.items():
                _size, digest = writer.add_file(path, files_record[key]["path"])
                if digest != files_record[key]["sha256"]:
                    raise ExportError(f"{files_record[key]['path']}: changed while the bundle was written")
            device_refs.add_to(writer)
            with step("write bundle"):
                bundle = writer.finish(sign_key=opts.sign_key)
    report["bundle"] = str(bundle)
    report["failures"] = failures
    return report


def reference_users(histories: list[np.ndarray]) -> list[int]:
    """The users of the device reference sets: the shortest history (most padding) and the longest."""
    by_length = np.argsort([len(h) for h in histories], kind="stable")
    return list(dict.fromkeys(int(i) for i in (by_length[0], by_length[-1])))[:REFERENCE_USERS]


def _e2e_failures(precision: str, e2e: dict[str, Any], max_ndcg_drop: float) -> list[str]:
    out = []
    if precision == "fp32":
        if e2e["same_topk"] < MIN_SAME_TOPK:
            out.append(
                f"fp32: the same top-{e2e['k']} as PyTorch for {100 * e2e['same_topk']:.1f}% of the validation "
                f"users (at least {100 * MIN_SAME_TOPK:g}% needed)"
            )
        if e2e["score_max_abs_diff"] > SCORE_ATOL:
            out.append(
                f"fp32: top-{e2e['k']} scores differ by {e2e['score_max_abs_diff']:.3g} > {SCORE_ATOL:g}"
            )
    if e2e["ndcg@10_drop"] > max_ndcg_drop:
        out.append(
            f"{precision}: NDCG@10 {e2e['metrics'].get('ndcg@10')} vs PyTorch {e2e['metrics_pytorch'].get('ndcg@10')} "
            f"(more than {max_ndcg_drop:g} lower)"
        )
    return out


def _run_metrics(run: Path) -> dict[str, Any] | None:
    try:
        metrics = json.loads((run / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return {k: metrics.get(k) for k in ("valid", "test") if k in metrics}
