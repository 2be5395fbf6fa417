"""Emulated boards: an arm64 Debian userland run under qemu-user, reached over SSH on loopback.

    edgewise board create pi --profile rpi5     # build (once, cached) and copy an arm64 rootfs
    edgewise board start pi                     # sshd on 127.0.0.1:PORT inside it; in the inventory
    edge-deploy --device rpi5 --host pi --bootstrap --key fleet.pub ...
    edgewise board stop pi                      # every process of the board ended, nothing mounted
    edgewise board destroy pi

A board is what a Raspberry Pi OS (Debian bookworm arm64) or a Jetson without CUDA looks like to
``edge-deploy`` and ``edgewise bench --host``: the device's architecture, its Python, real aarch64
wheels and kernels (XNNPACK, onnxruntime's ARM paths). It is not the device's speed: every figure
measured on a board is emulated. The pieces, one job each:

* :mod:`.host`    what the machine must provide (root, qemu-user-static with binfmt_misc,
  debootstrap) and the mounts a board runs with (never ``/sys``: onnxruntime's CPU detection
  reads the host's x86 topology from it under emulation and crashes);
* :mod:`.rootfs`  the arm64 userland per distribution, built once with debootstrap and cached
  outside the repository (``$XDG_CACHE_HOME/edgewise/boards``);
* :mod:`.board`   one board: create (copy the cached rootfs), start (sshd on a loopback port with
  generated keys, registered in the device inventory), stop, destroy, list.

Host-side tooling: nothing under ``edgewise.edge`` imports it.
"""
