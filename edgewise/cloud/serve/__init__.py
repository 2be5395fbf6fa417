"""Serving in the cloud: the project's own models behind an OpenAI-compatible HTTP API, and the
large models on vLLM.

- :mod:`.config`      the serve config (YAML -> :class:`~.config.ServeConfig`)
- :mod:`.service`     request handling shared by every transport (auth, limits, errors, counters)
- :mod:`.backends`    the models: bundles through the edge pipelines, runs in PyTorch, chat upstreams
- :mod:`.app`         ``create_app(config)``: the FastAPI app (uvicorn, or Ray Serve unchanged)
- :mod:`.ray_serve`   the app as a Ray Serve deployment with replicas
- :mod:`.vllm`        the ``vllm serve`` command of a config, presets for Keye-VL-8B and OneRec-8B
- :mod:`.mqtt_bridge` answers devices' offload requests over MQTT with the same service
- :mod:`.commands`    ``edgewise cloud serve`` and ``edgewise cloud serve-init``

Nothing here imports torch at import time: a run's backend imports it when the model loads.
"""
