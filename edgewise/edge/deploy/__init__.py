"""``edge-deploy``: put a bundle on a device, check it runs, roll back automatically when it does not.

    edge-deploy --list-devices
    edge-deploy --device rpi5 --root /opt/edgewise ser-tiny-1.1.0.tar.gz           # on the device
    edge-deploy --device rpi5 --host pi@10.0.0.7 ser-tiny-1.1.0/                   # from a laptop
    edge-deploy --device jetson --host nv@10.0.0.9 --bootstrap --wheel-index URL   # first time
    edge-deploy wheelhouse --device rpi5 --out wheels/        # then --bootstrap --wheelhouse wheels/
    edge-deploy status --device rpi5 --host pi@10.0.0.7
    edge-deploy rollback --device rpi5 --host pi@10.0.0.7
    edge-deploy devices

The pieces, one job each:

* :mod:`.preflight`  does this bundle suit this device (verified, an artifact the profile wants,
  within its memory budget, the right machine), and one inference on the model;
* :mod:`.local`      install, switch, health check through the daemon (SIGHUP, ``health.json``) or
  in-process, automatic rollback; what runs on the device itself;
* :mod:`.ssh`        the system ``ssh``/``scp`` binaries, one multiplexed connection per run;
* :mod:`.remote`     the laptop side: pre-flight here, copy the archive, run the device's own
  ``edge-deploy`` and stream its output;
* :mod:`.bootstrap`  the first-time setup of a device as a list of plain shell steps;
* :mod:`.wheelhouse` the device's wheels, downloaded here (``edge-deploy wheelhouse``), for an
  offline ``--bootstrap --wheelhouse DIR``;
* :mod:`.broker_acl` the fleet's Mosquitto password file and ACL (one login per device);
* :mod:`.inventory`  ``~/.config/edgewise/devices.json``: the devices this machine deploys to.

Nothing here imports torch (the package runs on the devices).
"""

from __future__ import annotations

from edgewise.errors import EdgewiseError


class DeployError(EdgewiseError):
    """A deploy, rollback, status or bootstrap cannot go on; the message says why and what to do."""


__all__ = ["DeployError"]
