"""ed25519 signatures over the manifest's bytes (``cryptography`` is imported lazily)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from edgewise.bundle.schema import MANIFEST_NAME, SIGNATURE_NAME, BundleError, SignatureError
from edgewise.errors import MissingDependencyError
from edgewise.fsutil import write_private, write_text_atomic
from edgewise.safejson import load_json

MAX_SIGNATURE_BYTES = 4096  # manifest.sig is ~200 bytes: {algorithm, key_id, signature}

# --------------------------------------------------------------------------------------------------
# Signatures (ed25519, via the optional `cryptography` package)


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise MissingDependencyError(
            "bundle signatures need the 'cryptography' package: pip install 'cryptography>=41'"
        ) from None
    return InvalidSignature, UnsupportedAlgorithm, serialization, ed25519


def _read_key_file(path: Path, kind: str) -> bytes:
    if not path.is_file():
        raise SignatureError(f"{path}: {kind} key file not found")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SignatureError(f"{path}: cannot read the {kind} key file ({exc.strerror})") from None


def _load_private_key(path: str | os.PathLike):
    _, unsupported, serialization, ed25519 = _crypto()
    path = Path(path)
    data = _read_key_file(path, "private")
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, unsupported) as exc:
            raise SignatureError(f"{path}: not a usable PEM private key: {exc}") from None
    elif len(data) == 32:
        key = ed25519.Ed25519PrivateKey.from_private_bytes(data)
    else:
        raise SignatureError(
            f"{path}: expected a PEM ed25519 private key or 32 raw bytes, got {len(data)} bytes"
        )
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SignatureError(f"{path}: expected an ed25519 private key, got {type(key).__name__}")
    return key


def _load_public_key(path: str | os.PathLike):
    _, unsupported, serialization, ed25519 = _crypto()
    path = Path(path)
    data = _read_key_file(path, "public")
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, unsupported) as exc:
            raise SignatureError(f"{path}: not a usable PEM public key: {exc}") from None
    elif len(data) == 32:
        key = ed25519.Ed25519PublicKey.from_public_bytes(data)
    else:
        raise SignatureError(
            f"{path}: expected a PEM ed25519 public key or 32 raw bytes, got {len(data)} bytes"
        )
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SignatureError(f"{path}: expected an ed25519 public key, got {type(key).__name__}")
    return key


def _key_id(public_key) -> str:
    """First 16 hex digits of the sha256 of the raw public key: names a key in messages."""
    _, _, serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(
    private_path: str | os.PathLike, public_path: str | os.PathLike, *, overwrite: bool = False
) -> str:
    """Write a new ed25519 key pair as PEM (private key mode 0600); return the key id."""
    _, _, serialization, ed25519 = _crypto()
    private_path, public_path = Path(private_path), Path(public_path)
    for path in (private_path, public_path):
        if path.exists() and not overwrite:
            raise SignatureError(f"{path}: already exists; refusing to replace a key (pass overwrite=True)")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_private(private_path, private_pem)
    write_text_atomic(public_path, public_pem.decode("ascii"))
    return _key_id(key.public_key())


def sign_manifest(bundle_dir: str | os.PathLike, private_key_path: str | os.PathLike) -> Path:
    """Sign the exact bytes of ``bundle_dir/manifest.json`` into ``manifest.sig``; return its path.

    The .tar.gz beside an existing bundle does not change: rewrite it with :func:`write_archive`.
    """
    bundle_dir = Path(bundle_dir)
    manifest_path = bundle_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{bundle_dir}: not a bundle: {MANIFEST_NAME} is missing")
    key = _load_private_key(private_key_path)
    signature = key.sign(manifest_path.read_bytes())
    payload = {
        "algorithm": "ed25519",
        "key_id": _key_id(key.public_key()),
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    return write_text_atomic(bundle_dir / SIGNATURE_NAME, json.dumps(payload, indent=2) + "\n")


def _verify_manifest_bytes(data: bytes, sig_path: Path, public_key_path: str | os.PathLike) -> str:
    invalid_signature, _, _, _ = _crypto()
    key = _load_public_key(public_key_path)
    key_id = _key_id(key)
    if not sig_path.is_file():
        raise SignatureError(
            f"{sig_path}: missing: the bundle is not signed, but a public key ({public_key_path}) was given"
        )
    try:  # an untrusted file: its size is checked before it is read
        size = sig_path.stat().st_size
        if size > MAX_SIGNATURE_BYTES:
            raise SignatureError(
                f"{sig_path}: {size} bytes is over the limit of {MAX_SIGNATURE_BYTES} bytes for a signature"
            )
        raw = sig_path.read_bytes()
    except OSError as exc:
        raise SignatureError(f"{sig_path}: cannot read it ({exc.strerror})") from None
    sig = load_json(raw, source=str(sig_path), max_bytes=MAX_SIGNATURE_BYTES, error=SignatureError)
    try:
        algorithm, signature = sig["algorithm"], base64.b64decode(sig["signature"], validate=True)
    except (ValueError, TypeError, KeyError):
        raise SignatureError(
            f"{sig_path}: malformed: expected JSON with 'algorithm', 'key_id' and a base64 'signature'"
        ) from None
    if algorithm != "ed25519":
        raise SignatureError(f"{sig_path}: algorithm {algorithm!r} is not supported; expected 'ed25519'")
    try:
        key.verify(signature, data)
    except invalid_signature:
        signer = sig.get("key_id")
        if isinstance(signer, str) and signer != key_id:
            raise SignatureError(
                f"{sig_path}: signed with key {signer}, but {public_key_path} is key {key_id} (wrong key?)"
            ) from None
        raise SignatureError(
            f"{sig_path}: signature does not match {MANIFEST_NAME} with key {key_id}: "
            "the manifest was changed after signing"
        ) from None
    return key_id


def verify_signature(bundle_dir: str | os.PathLike, public_key_path: str | os.PathLike) -> str:
    """Check ``manifest.sig`` against ``manifest.json`` with a public key; return the key id."""
    bundle_dir = Path(bundle_dir)
    manifest_path = bundle_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{bundle_dir}: not a bundle: {MANIFEST_NAME} is missing")
    return _verify_manifest_bytes(manifest_path.read_bytes(), bundle_dir / SIGNATURE_NAME, public_key_path)


def public_key_id(path: str | os.PathLike) -> str:
    """The key id (as ``manifest.sig`` records it) of an ed25519 public key file; SignatureError
    naming the file when it is missing, unreadable or not an ed25519 public key."""
    return _key_id(_load_public_key(path))
