"""The bundle contract: what export writes and the edge runtime reads.

This package is shared by both halves, so it imports neither torch nor any runtime (numpy, pydantic
and the standard library only; ``cryptography`` is imported lazily, for signatures).

Layout
------
A bundle is a directory ``NAME-VERSION/`` and, beside it, the same directory as
``NAME-VERSION.tar.gz`` (one top-level folder, regular files and folders only, no links)::

    ser-tiny-1.0.0/
      manifest.json          the contract below
      manifest.sig           optional: ed25519 signature over the exact bytes of manifest.json
      models/ser.onnx        the artifacts, at the relative paths the manifest names
      models/ser.int8.onnx
      models/ser.fp32.tflite

manifest.json (``schema_version`` 1)
------------------------------------
Unknown fields are refused everywhere except inside the free-form dicts (``preprocessing``,
``provenance``, ``parity``, ``extra``), whose values must be plain JSON (finite numbers only).

=====================================  ======================================================================
field                                  content
=====================================  ======================================================================
``schema_version``                     ``1``; any other value is refused ("schema_version 7 is not supported")
``name``                               slug: lowercase letters, digits, ``-``, ``_`` (at most 64)
``version``                            semantic version (``1.0.0``, ``1.1.0-rc.1+build.5``)
``task``                               slug: ``ser``, later ``tts``, ``recommender``
``created``                            ISO 8601 time with a zone (``2026-05-09T07:35:25Z``)
``labels``                             list of unique class names, or ``null``
``preprocessing``                      dict; SER: ``log_mel`` (a ``LogMelConfig`` dict with the training
                                       ``mean``/``std``, validated on load) and optionally
                                       ``speaker_adaptation`` (``file``: the speaker adapter's
                                       ``{path, sha256, size_bytes}``, checked by ``bundle_file``)
``models``                             role -> model entry (SER: ``classifier``; TTS: ``acoustic``,
                                       ``vocoder``); at least one role, each with at least one artifact
``models.R.inputs`` / ``outputs``      list of ``{name, shape, dtype}``; ``shape`` items are ints >= 0 or
                                       symbolic names (``"batch"``, ``"time"``); ``dtype`` a numpy name
``models.R.extra``                     dict (e.g. KV-cache layout, vocoder hop size)
``models.R.artifacts[]``               one entry per file that implements the role:
``  .path``                            relative POSIX path inside the bundle (no ``..``, unique)
``  .format``                          slug: ``onnx``, ``tflite``, ``tensorrt-onnx`` (graph + build spec)
``  .precision``                       ``fp32``, ``fp16`` or ``int8``
``  .size_bytes`` / ``.sha256``        checked on every load (sha256 as 64 lowercase hex digits)
``  .runtime``                         slug: ``onnxruntime``, ``litert``, ``tensorrt``, ...
``  .fixed_shape``                     ``null`` (dynamic) or input name -> list of ints (same rank as the
                                       input, agreeing with its fixed dimensions); TFLite's window
``  .parity``                          dict: ``max_abs_diff``, ``tolerance``, task metric, ``passed``
``  .extra``                           dict; ``extra.reference``: the artifact's reference set for
                                       the device's parity check (``path`` of a ``.npz`` in the
                                       bundle, its ``sha256`` and ``size_bytes``, ``inputs``,
                                       ``frames``, ``export_check``; ``version`` 2: a multi-input,
                                       multi-output graph's set, TTS; see edgewise.edge.reference)
``provenance``                         dict: training run, corpus hash, edgewise/torch versions, git commit
=====================================  ======================================================================

The signature is not part of the manifest: ``manifest.sig`` is a small JSON file
``{"algorithm": "ed25519", "key_id": "...", "signature": "<base64>"}`` over the manifest's bytes, and
each artifact is bound to the manifest by its sha256, so one signature covers the whole bundle.

API
---
``BundleWriter`` builds a bundle in a temporary folder beside the destination and renames it into
place at the end (nothing is left behind on error); ``load_bundle`` opens a folder or an archive,
validates the manifest, checks every artifact's size and sha256 (streamed) and, given a public key,
the signature; ``safe_extract`` unpacks an archive refusing anything that could escape it.

Modules, one job each: ``schema`` (the manifest models and ``parse_manifest``), ``archive``
(hashing, archives, safe extraction), ``signing`` (keys and signatures), ``reader``
(``load_bundle``, ``Bundle``) and ``writer`` (``BundleWriter``). This package re-exports their
public names, so ``from edgewise.bundle import load_bundle`` is the one way to import them.
"""

from edgewise.bundle.archive import (
    MAX_MEMBERS,
    MAX_UNPACKED_BYTES,
    archive_for,
    archive_manifest,
    safe_extract,
    sha256_file,
    write_archive,
)
from edgewise.bundle.reader import Bundle, bundle_file, load_bundle
from edgewise.bundle.schema import (
    DTYPES,
    MANIFEST_NAME,
    PRECISIONS,
    SCHEMA_VERSION,
    SIGNATURE_NAME,
    ArtifactEntry,
    BundleError,
    IntegrityError,
    Manifest,
    ModelEntry,
    SignatureError,
    TensorSpec,
    parse_manifest,
    plain_json,
)
from edgewise.bundle.signing import (
    generate_keypair,
    public_key_id,
    sign_manifest,
    verify_signature,
)
from edgewise.bundle.writer import BundleWriter

__all__ = [
    "DTYPES",
    "MANIFEST_NAME",
    "MAX_MEMBERS",
    "MAX_UNPACKED_BYTES",
    "PRECISIONS",
    "SCHEMA_VERSION",
    "SIGNATURE_NAME",
    "ArtifactEntry",
    "Bundle",
    "bundle_file",
    "BundleError",
    "BundleWriter",
    "IntegrityError",
    "Manifest",
    "ModelEntry",
    "SignatureError",
    "TensorSpec",
    "archive_for",
    "archive_manifest",
    "generate_keypair",
    "load_bundle",
    "parse_manifest",
    "plain_json",
    "public_key_id",
    "safe_extract",
    "sha256_file",
    "sign_manifest",
    "verify_signature",
    "write_archive",
]
