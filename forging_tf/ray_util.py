"""The executors' choice, and joining Ray for the one that runs work as Ray tasks
(forging-recompute and forging-reproduce --executor=ray)."""

import enum

from forging_tf import errors


class Executor(enum.StrEnum):
  """Where work runs: local, on this machine; ray, as Ray tasks on a cluster."""

  LOCAL = "local"
  RAY = "ray"


def import_ray():
  """The ray module; ConfigError naming the extra to install if it is missing."""
  try:
    import ray  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise errors.ConfigError("the Ray executor needs Ray: pip install 'forging_tf[ray]'") from e
  return ray


def connect(address: str | None, log_to_driver: bool = False) -> bool:
  """Joins the Ray cluster at `address`, or starts a local instance (address None) that listens
  on the loopback interface only; nothing if this process is already connected. Returns whether
  it connected (the caller then disconnects with ray.shutdown())."""
  ray = import_ray()
  if ray.is_initialized():
    return False
  # A node joining a cluster keeps the address Ray finds for it. "local": a new instance even
  # where another (or a stale record of one) is on this machine.
  local = {} if address else {"_node_ip_address": "127.0.0.1"}
  try:
    ray.init(
        address=address or "local",
        include_dashboard=False,
        log_to_driver=log_to_driver,
        configure_logging=False,
        **local,
    )
  except ConnectionError as e:
    raise errors.ConfigError(
        f"cannot join the Ray cluster at {address}: {e}; start it (ray start --head) or "
        "check --ray_address"
    ) from e
  return True
