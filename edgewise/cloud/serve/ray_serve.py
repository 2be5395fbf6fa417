"""The same app as a Ray Serve deployment, for when one process is not enough.

``create_app(config)`` is wrapped unchanged with ``serve.ingress`` in a deployment of
``ray.num_replicas`` replicas (``ray.num_cpus_per_replica`` CPUs each). Ray pickles the app to
each replica, where its startup loads the models (one copy per replica); Ray's HTTP proxy spreads
the requests over the replicas and serves TLS with the same certificate. ``ray.address`` joins a
running cluster (``ray start --head`` on the head node, ``ray start --address HEAD:6379`` on the
others); without it a local Ray instance is started with ``ray.num_cpus`` CPUs.
"""

from __future__ import annotations

import logging
from typing import Any

from edgewise.cloud.serve.config import ServeConfig, TLSConfig
from edgewise.errors import MissingDependencyError

log = logging.getLogger(__name__)

APP_NAME = "edgewise"


def _serve():
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise MissingDependencyError(
            f"engine ray needs Ray Serve ({exc}); install it with: pip install 'edgewise[ray]' (ray[serve])"
        ) from None
    return ray, serve


def deployment(config: ServeConfig) -> Any:
    """The bound Ray Serve application (not started)."""
    from edgewise.cloud.serve.app import create_app

    _, serve = _serve()
    app = create_app(config)

    @serve.deployment(
        name="edgewise-serve",
        num_replicas=config.ray.num_replicas,
        ray_actor_options={"num_cpus": config.ray.num_cpus_per_replica},
    )
    @serve.ingress(app)
    class EdgewiseServe:
        """The replicas: the ingress app is everything (its startup loads the models)."""

    return EdgewiseServe.bind()


def start(config: ServeConfig) -> None:
    """Start (or join) Ray, start Serve's HTTP proxy on the config's host and port (TLS with its
    certificate) and deploy the app; returns when every replica is up."""
    ray, serve = _serve()
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
        if config.ray.address:
            kwargs["address"] = config.ray.address
        elif config.ray.num_cpus:
            kwargs["num_cpus"] = config.ray.num_cpus
        ray.init(**kwargs)
    http: dict[str, Any] = {"host": config.host, "port": config.port}
    if isinstance(config.tls, TLSConfig):
        http.update(ssl_certfile=str(config.tls.cert), ssl_keyfile=str(config.tls.key))
    serve.start(http_options=http)
    serve.run(deployment(config), name=APP_NAME, route_prefix="/", blocking=False)
    log.info(
        "Ray Serve: %d replica(s) answering on %s://%s:%d",
        config.ray.num_replicas,
        config.scheme,
        config.host,
        config.port,
    )


def stop() -> None:
    ray, serve = _serve()
    try:
        serve.shutdown()
    finally:
        ray.shutdown()
