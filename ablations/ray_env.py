"""Start or join the Ray cluster that runs a study, with Ray's console output kept in its log files.

Without an address (argument or `RAY_ADDRESS`) this starts an embedded local Ray sized to the
machine. It listens on 127.0.0.1 only and keeps the dashboard on: with the dashboard off, Ray 2.60
does not free the placement group of a stopped Train run and a sweep can hang. With an address,
including inside `ray job submit`, it connects to that cluster. Ray's token authentication is
left as the cluster sets it.
"""

from __future__ import annotations

import logging
import os
import warnings

# Set before the embedded Ray starts, so that its processes inherit them.
EMBEDDED_ENV = {
    # On Linux, Ray 2.60 replaces 127.0.0.1 with the machine's routable address, and its gRPC
    # servers then listen on every interface. With this set to 0 before Ray is imported, the node
    # address stays 127.0.0.1 and the servers listen on it alone.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # Ray Train polls its workers at this interval (seconds); the default of 5 adds seconds of
    # teardown to every Train run.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    # Worker processes the raylet starts at once (default: the CPU count). Each trial starts several
    # (Tune function, Train controller, Train workers). At the default, the raylet queues those
    # starts on a small machine and prints a warning about them on the driver's stdout.
    "RAY_worker_maximum_startup_concurrency": "16",
    # The preemption watcher is one more actor process per Train run; a single machine is never
    # preempted. Clusters keep it (it is on by default there).
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    # Ray Train gives up on starting a worker group after 60 s by default. On a busy 2-core machine
    # a group started right after another trial ended was seen to need longer; 300 s leaves room.
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300",
}
if not os.environ.get("RAY_ADDRESS"):
    for _key, _value in EMBEDDED_ENV.items():
        os.environ.setdefault(_key, _value)

import ray  # noqa: E402  (imported after the environment above is set)
import ray._private.ray_constants as _ray_constants  # noqa: E402

# Set in every case: they only change what this driver process prints.
DRIVER_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_DEDUP_LOGS": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
}

# A custom resource that each trial's driver function requests instead of a CPU fraction, so that
# Train workers can use every whole CPU. The embedded Ray and the nodes of cluster.yaml advertise
# it; on other clusters trials fall back to a small CPU fraction (see `trial_driver_resources`).
TRIAL_DRIVER_RESOURCE = "ihas_trial_driver"
TRIAL_DRIVER_SLOTS = 1000

_embedded = False  # whether init_ray started the Ray this process uses

_QUIET_LOGGERS = ("ray", "ray.tune", "ray.train", "ray.air", "ray.data", "ray.util", "ray._private")


def init_ray(address: str | None = None, num_cpus: int | None = None) -> str:
    """Connect to `address` or `RAY_ADDRESS`, else start an embedded local Ray; return a one-line summary.

    Does nothing but summarize when Ray is already initialized in this process (as in tests).
    """
    for key, value in DRIVER_ENV.items():
        os.environ.setdefault(key, value)
    quiet_ray_loggers()
    if ray.is_initialized():
        return f"using the Ray already running in this process ({_describe_resources()})"
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        return f"connected to the Ray cluster at {address} ({_describe_resources()})"
    for key, value in EMBEDDED_ENV.items():
        os.environ.setdefault(key, value)
    # Ray reads the variable once, when it is first imported. In a process that imported Ray before
    # this module (a test session, a notebook), setting the constant has the same effect.
    if os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
        _ray_constants.ENABLE_RAY_CLUSTER = False
    global _embedded
    cpus = num_cpus or os.cpu_count() or 1
    _embedded = True
    ray.init(
        num_cpus=cpus,
        resources={TRIAL_DRIVER_RESOURCE: TRIAL_DRIVER_SLOTS},
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        logging_level=logging.WARNING,
        configure_logging=True,
    )
    return (f"no RAY_ADDRESS set: started an embedded local Ray on 127.0.0.1 "
            f"({_describe_resources()}); its logs are under {_session_dir()}")


def is_embedded() -> bool:
    """Return whether this process runs on the embedded local Ray that `init_ray` started (not a cluster)."""
    return _embedded and ray.is_initialized()


def trial_driver_resources(driver_cpus: float) -> dict[str, float]:
    """Return the resources of one trial's driver function on the connected cluster."""
    if ray.cluster_resources().get(TRIAL_DRIVER_RESOURCE, 0) >= 1:
        return {"cpu": 0, TRIAL_DRIVER_RESOURCE: 1}
    return {"cpu": driver_cpus}


def shutdown_ray() -> None:
    """Stop the embedded Ray, or disconnect from a cluster, if this process is connected."""
    global _embedded
    if ray.is_initialized():
        ray.shutdown()
    _embedded = False


def quiet_ray_loggers() -> None:
    """Keep Ray's own console messages below WARNING out of the driver's output."""
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"ray\..*")


def _describe_resources() -> str:
    resources = ray.cluster_resources()
    cpus = resources.get("CPU", 0)
    gpus = resources.get("GPU", 0)
    return f"{cpus:g} CPUs, {gpus:g} GPUs"


def _session_dir() -> str:
    node = getattr(ray._private.worker, "_global_node", None)
    return node.get_session_dir_path() if node is not None else "the Ray session directory"
