"""Ray, the optional engine of sweeps and distributed tournaments (the floor both stand on):
imported only when used, with a clear message when it is missing, and connected to a local
instance or to a cluster."""

from __future__ import annotations

INSTALL_HINT = 'pip install "cmfq[ray]"'


def require_ray():
    """The ``ray`` module; ModuleNotFoundError saying how to install it when it is missing."""
    try:
        import ray
    except ImportError as err:
        message = f"this needs Ray, which is not installed: {INSTALL_HINT}"
        raise ModuleNotFoundError(message) from err
    return ray


def connect(address: str | None = None):
    """Connect this process to Ray and return the module.

    ``address`` is Ray's: a cluster's ``HOST:PORT`` (``ray start --head`` prints it), ``"auto"``
    for the cluster this machine belongs to, ``None`` for Ray's default (``RAY_ADDRESS`` or a
    cluster started on this machine, else a new local instance using all CPUs). A process already
    connected stays on its instance.
    """
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level="WARNING")
    return ray
