"""``edgewise cloud serve`` and ``edgewise cloud serve-init``.

``serve --config FILE`` runs what the config's ``engine`` says:

- ``embedded``: the FastAPI app under uvicorn in this process (models loaded once, before the
  port opens), and the MQTT offload bridge beside it when the config has an ``mqtt`` section;
- ``ray``: the same app as a Ray Serve deployment with ``ray.num_replicas`` replicas;
- ``vllm``: replaces this process with ``vllm serve ...`` (``--print-command`` prints it instead;
  without vLLM installed, an error says what is missing).

``--bridge-only`` runs only the MQTT bridge (with its own copy of the models): start several to
split the devices' requests. ``serve-init DIR`` writes a secure config folder: ``config.yaml``,
``tokens.sha256`` (the token's digest), ``client/token`` (the token itself, mode 0600: give it to
the devices, ``offload.token_file``), ``tls/server.pem`` (the self-signed certificate, also the
devices' ``offload.ca_file``) and ``tls/server.key`` (0600).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from edgewise.errors import ConfigError

log = logging.getLogger("edgewise.cloud.serve")


def serve_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", type=Path, required=True, help="the serve config (YAML; serve-init writes one)"
    )
    p.add_argument(
        "--print-command",
        action="store_true",
        help="engine vllm: print the `vllm serve` command (and its environment) and exit",
    )
    p.add_argument(
        "--dummy-weights",
        action="store_true",
        help="engine vllm: random weights of the real architecture (--load-format dummy), for throughput runs",
    )
    p.add_argument(
        "--bridge-only",
        action="store_true",
        help="run only the MQTT offload bridge of the config's mqtt section (several split the load)",
    )


def serve_run(args: argparse.Namespace) -> int:
    from edgewise.cloud.serve.config import check_files, load_serve_config

    config = load_serve_config(args.config)
    if config.engine == "vllm":
        return _run_vllm(config, args)
    for flag in ("print_command", "dummy_weights"):
        if getattr(args, flag):
            raise ConfigError(
                f"--{flag.replace('_', '-')} is for engine vllm; {args.config} says engine {config.engine}"
            )
    check_files(config, str(args.config))
    if args.bridge_only:
        return _run_bridge_only(config, args)
    if config.engine == "ray":
        return _run_ray(config)
    return _run_embedded(config)


def _run_vllm(config: Any, args: argparse.Namespace) -> int:
    from edgewise.cloud.serve.config import check_files
    from edgewise.cloud.serve.vllm import exec_vllm, find_vllm, vllm_command

    if args.bridge_only:
        raise ConfigError(
            "--bridge-only answers with the embedded models; engine vllm has none (point devices at vLLM's URL)"
        )
    if args.dummy_weights:
        config = config.model_copy(update={"vllm": config.vllm.model_copy(update={"load_format": "dummy"})})
    launch = vllm_command(config, read_key=not args.print_command)
    if args.print_command:
        print(launch.shell())
        for note in launch.notes:
            print(f"# {note}")
        return 0
    find_vllm(launch.argv[0])  # before reading anything else: the missing program is the first thing to say
    check_files(config, str(args.config))
    for note in launch.notes:
        log.info("%s", note)
    exec_vllm(launch)
    return 0  # pragma: no cover - exec does not return


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror} (port: in the serve config)"
            ) from None


def _run_embedded(config: Any) -> int:
    import uvicorn

    from edgewise.cloud.serve.app import create_app
    from edgewise.cloud.serve.config import TLSConfig
    from edgewise.cloud.serve.service import Service

    _check_port(config.host, config.port)
    service = Service(config).load()
    log.info("loaded %d model(s): %s", len(service.backends), ", ".join(service.backends))
    bridge = _start_bridge(service, config)
    tls = (
        {"ssl_certfile": str(config.tls.cert), "ssl_keyfile": str(config.tls.key)}
        if isinstance(config.tls, TLSConfig)
        else {}
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config, service, commands=bridge.send_command if bridge is not None else None),
            host=config.host,
            port=config.port,
            log_level="warning" if log.getEffectiveLevel() > logging.INFO else "info",
            access_log=log.isEnabledFor(logging.DEBUG),
            timeout_graceful_shutdown=10,
            **tls,
        )
    )
    print(
        f"edgewise: serving {', '.join(service.backends)} on {config.scheme}://{config.host}:{config.port}",
        flush=True,
    )
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the handler it found:
    # this one, so the bridge and the models are closed here too and the exit status is 0
    signal.signal(signal.SIGTERM, _terminated)
    try:
        server.run()
    except _Terminated:
        pass
    finally:
        if bridge is not None:
            bridge.stop()
        service.close()
    return 0 if server.started else 1


class _Terminated(Exception):
    pass


def _terminated(*_: Any) -> None:
    raise _Terminated()


def _start_bridge(service: Any, config: Any) -> Any:
    if config.mqtt is None:
        return None
    from edgewise.cloud.serve.mqtt_bridge import MqttBridge

    return MqttBridge(service, config.mqtt).start()


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def _run_ray(config: Any) -> int:
    from edgewise.cloud.serve import ray_serve

    ray_serve.start(config)
    bridge = None
    try:
        if config.mqtt is not None:
            from edgewise.cloud.serve.service import Service

            bridge = _start_bridge(Service(config).load(), config)
        print(
            f"edgewise: Ray Serve, {config.ray.num_replicas} replica(s), on {config.scheme}://{config.host}:{config.port}",
            flush=True,
        )
        _wait_for_signal()
    finally:
        if bridge is not None:
            bridge.stop()
        ray_serve.stop()
    return 0


def _run_bridge_only(config: Any, args: argparse.Namespace) -> int:
    from edgewise.cloud.serve.service import Service

    if config.mqtt is None:
        raise ConfigError(f"--bridge-only: {args.config} has no mqtt section (the broker to answer on)")
    service = Service(config).load()
    bridge = _start_bridge(service, config)
    print(
        f"edgewise: offload bridge for {', '.join(service.backends)} on {config.mqtt.host}:{config.mqtt.port}",
        flush=True,
    )
    try:
        _wait_for_signal()
    finally:
        bridge.stop()
        service.close()
    return 0


# --------------------------------------------------------------------------------------------------
# serve-init


def serve_init_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="the folder to write (must not hold a config already)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)"
    )
    p.add_argument("--port", type=int, default=8443, help="port (default 8443)")
    p.add_argument(
        "--cert-host",
        help="the name or address clients connect to, written in the certificate "
        "(default: --host, or 127.0.0.1 when listening on all addresses)",
    )
    p.add_argument("--cert-days", type=int, default=365, help="certificate validity in days (default 365)")
    p.add_argument(
        "--bundle", action="append", default=[], metavar="ID=DIR", help="serve a bundle (repeatable)"
    )
    p.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="ID=DIR",
        help="serve a trained ser/rec run (repeatable)",
    )
    p.add_argument(
        "--vllm-preset",
        choices=["keye-vl-8b", "onerec-8b"],
        help="write a config for vLLM with this model instead (engine vllm, the token as its API key)",
    )


def _model_arg(value: str, option: str) -> tuple[str, Path]:
    model_id, sep, path = value.partition("=")
    if not sep or not model_id or not path:
        raise ConfigError(f"{option} {value!r}: expected ID=DIR, e.g. {option} ser-teacher=runs/ser-base")
    return model_id, Path(path).resolve()


def _task_of(kind: str, path: Path, option: str) -> str:
    from edgewise.tasks import task_of_run

    if not path.is_dir():
        raise ConfigError(f"{option}: {path} is not a folder")
    if kind == "run":
        if not (path / "model.json").is_file():
            raise ConfigError(f"{option}: {path} is not a finished training run (no model.json)")
        return task_of_run(path)
    try:
        return str(json.loads((path / "manifest.json").read_text())["task"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{option}: {path} is not a bundle (no readable manifest.json with a task)"
        ) from None


def serve_init_run(args: argparse.Namespace) -> int:
    import yaml

    from edgewise.cloud.serve.auth import hash_token, new_token, write_secret
    from edgewise.cloud.serve.config import is_loopback, load_serve_config
    from edgewise.devtools.tls import self_signed_cert
    from edgewise.fsutil import write_text_atomic

    out: Path = args.dir
    if (out / "config.yaml").exists():
        raise ConfigError(
            f"{out / 'config.yaml'} exists; serve-init does not replace a config (or its token)"
        )
    if args.cert_days < 1:
        raise ConfigError(f"--cert-days must be at least 1, got {args.cert_days}")
    models: list[dict[str, Any]] = []
    for kind in ("bundle", "run"):
        for value in getattr(args, kind):
            model_id, path = _model_arg(value, f"--{kind}")
            models.append(
                {"id": model_id, "task": _task_of(kind, path, f"--{kind} {model_id}"), kind: str(path)}
            )
    if not models and not args.vllm_preset:
        raise ConfigError(
            "name what to serve: --bundle ID=DIR / --run ID=DIR (repeatable), or --vllm-preset NAME"
        )
    data: dict[str, Any] = {
        "engine": "vllm" if args.vllm_preset else "embedded",
        "host": args.host,
        "port": args.port,
        "tls": {"cert": "tls/server.pem", "key": "tls/server.key"},
        "auth": {"tokens_file": "tokens.sha256"},
        "models": models,
    }
    if args.vllm_preset:
        data["vllm"] = {"preset": args.vllm_preset, "api_key_file": "client/token"}
    load_serve_config(data, base=out)  # the same checks as at start, before anything is written
    cert_host = args.cert_host or (args.host if args.host not in ("0.0.0.0", "::") else "127.0.0.1")
    token = new_token()
    out.mkdir(parents=True, exist_ok=True)
    cert, key = self_signed_cert(out / "tls", host=cert_host, days=args.cert_days)
    write_secret(out / "client" / "token", token + "\n")
    write_text_atomic(
        out / "tokens.sha256", f"# sha256 of each accepted bearer token, one per line\n{hash_token(token)}\n"
    )
    header = "# edgewise cloud serve --config THIS_FILE (written by edgewise cloud serve-init)\n"
    write_text_atomic(out / "config.yaml", header + yaml.safe_dump(data, sort_keys=False))
    print(f"wrote {out / 'config.yaml'}")
    print(
        f"  certificate  {cert} (valid {args.cert_days} days for {cert_host}; the devices' offload.ca_file)"
    )
    print(f"  token        {out / 'client' / 'token'} (mode 0600; the devices' offload.token_file)")
    if not is_loopback(args.host):
        print(
            f"  note: listening on {args.host}: clients must connect as {cert_host} (--cert-host) to verify TLS"
        )
    print(f"start it with: edgewise cloud serve --config {out / 'config.yaml'}")
    return 0
