"""Joining or starting Ray for a command, and stopping only what that command started.

`RaySession` is the one way the commands reach Ray: it joins the cluster at an address
(or RAY_ADDRESS), else starts a local instance, and on exit shuts Ray down only when this
session connected it. A caller that already holds Ray (a study inside an ablation, a test)
keeps it. On SIGTERM `contrastlab.shutdown` raises `Terminated` in the main thread, so the
`with` block's exit runs and Ray stops; whatever is left is reaped by `stop_children`.

A session given a `log_dir` (a study's `OUTPUT/logs`) that starts or joins Ray itself sends
Ray's own output there (`contrastlab.raytrain.ray_logs`), unless `contrastlab --verbose`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from contrastlab.errors import ConfigError
from contrastlab.raytrain.ray_logs import RayOutput, verbose

log = logging.getLogger("contrastlab")
CLIENT_PREFIX = "ray://"


def check_address(
    address: str | None, command: str = "COMMAND", field: str = "--address", source: str = "<command line>"
) -> None:
    """Refuse a Ray Client address: the commands run their driver on the cluster, as a job.

    Through Ray Client the driver's files (run folders, the study database, TensorBoard)
    would be written on the head node, not where the command was typed, and Tune's
    callbacks would run remotely; `ray job submit` runs the whole command on the cluster.
    """
    if address and address.strip().lower().startswith(CLIENT_PREFIX):
        raise ConfigError(
            source,
            field,
            f"auto or HOST:6379, not a Ray Client address (got {address.strip()!r}): run the command on "
            f"the cluster as a job, "
            f"`ray job submit --address http://HEAD:8265 -- contrastlab {command} ... --address auto`",
        )


def token_files() -> list[Path]:
    """Where Ray keeps the cluster's authentication token (RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token)."""
    paths = [Path.home() / ".ray" / "auth_token"]
    custom = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if custom:
        paths.insert(0, Path(custom).expanduser())
    return paths


def secure_token_file() -> None:
    """Make this user's Ray token readable by this user only: with it anyone can run code on the cluster."""
    for path in token_files():
        try:
            info = path.stat()
            if info.st_uid == os.getuid() and info.st_mode & 0o077:
                os.chmod(path, 0o600)
                log.info("made the Ray token %s readable by its owner only (mode 0600)", path)
        except OSError:
            continue


def init_ray(
    address: str | None,
    num_cpus: int | None = None,
    *,
    dashboard_host: str = "127.0.0.1",
    output: RayOutput | None = None,
) -> bool:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local instance; True when
    this call connected Ray (the caller then shuts it down when done).

    With a started `output`, the workers' output is not streamed to this process
    (`log_to_driver=False`): `output` follows their log files instead.

    A local instance binds its dashboard to `dashboard_host` (loopback by default: the
    dashboard can submit jobs, so it must not face the network unless asked). Token
    authentication is left as Ray sets it up (on for new clusters).
    """
    import ray

    if ray.is_initialized():
        return False
    secure_token_file()
    # Inside `ray job submit` (or with RAY_ADDRESS exported) there is a cluster to join.
    check_address(address)
    if not address:
        check_address(os.environ.get("RAY_ADDRESS"), field="RAY_ADDRESS", source="<environment>")
    address = address or os.environ.get("RAY_ADDRESS")
    quiet = {} if output is None else {"log_to_driver": False}
    if address:
        context = ray.init(address=address, **quiet)
    else:
        # "local": a new instance even when another cluster on this host left its address behind.
        context = ray.init(
            address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host=dashboard_host, **quiet
        )
    if output is not None:
        # On a cluster, only this job's workers; a local instance runs nothing else.
        job = ray.get_runtime_context().get_job_id() if address else None
        output.follow((getattr(context, "address_info", None) or {}).get("session_dir"), job)
    secure_token_file()  # Ray writes a new token with the umask's mode (often 0644)
    url = getattr(context, "dashboard_url", None)
    if url:
        log.info("Ray dashboard: http://%s", url)
    return True


class RaySession:
    """Ray for one command: started (or joined) by `ensure()`, at the latest when needed,
    and shut down on exit only when this session connected it.

        with RaySession(address, num_cpus) as session:
            session.ensure()
            ...
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None, log_dir: str | Path | None = None):
        self.address, self.num_cpus, self.log_dir = address, num_cpus, log_dir
        self.owned = False
        self.output: RayOutput | None = None

    @property
    def joins_cluster(self) -> bool:
        """A cluster given by address (it may be autoscaled), not a local instance."""
        return self.address is not None or "RAY_ADDRESS" in os.environ

    def ensure(self) -> RaySession:
        """Connect Ray unless it is connected already (by this session or by the caller)."""
        import ray

        if self.owned or ray.is_initialized():
            return self
        if self.log_dir is not None and not verbose():
            self.output = RayOutput(self.log_dir).start()
        try:
            self.owned = init_ray(self.address, num_cpus=self.num_cpus, output=self.output)
        except BaseException:
            self._stop_output()
            raise
        return self

    def _stop_output(self) -> None:
        if self.output is not None:
            self.output.stop()
            self.output = None

    def close(self) -> None:
        """Shut Ray down if this session connected it; a caller's Ray stays up."""
        if not self.owned:
            self._stop_output()
            return
        self.owned = False
        import ray

        try:
            ray.shutdown()
        finally:
            self._stop_output()

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


__all__ = ["RaySession", "check_address", "init_ray", "secure_token_file", "token_files"]
