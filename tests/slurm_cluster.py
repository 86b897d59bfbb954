"""A real single-node SLURM cluster for tests: munged, slurmctld and slurmd started by hand.

Everything lives in one scratch folder (config, state, logs, pid files, munge key and socket) with
its own ports, so a cluster started here touches nothing of the machine's own SLURM or munge set-up.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("slurmctld", "slurmd", "munged")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "srun")
# The node the workflow profile's requests must fit on (train asks for 4 CPUs, 16 GB and a GPU).
# SlurmdParameters=config_overrides lets slurmd accept it on a smaller machine: nothing enforces
# the limits (no cgroups), so they only decide what the scheduler lets start at once.
NODE_CPUS = 4
NODE_MEMORY_MB = 16384
PARTITION = "debug"
# The jobstep plugin drops every SLURM_* variable (SLURM_CONF included) before its nested srun,
# which then reads the compiled-in default: the cluster's config must be linked there.
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
SCRATCH_PREFIX = "lipsync-slurm-"


def _ours(link: Path) -> bool:
    """Whether a config at the default path is a link left by a cluster of these tests."""
    return link.is_symlink() and link.readlink().parent.name.startswith(SCRATCH_PREFIX)


def _missing_binaries() -> list[str]:
    return [name for name in (*DAEMONS, *CLIENTS) if shutil.which(name) is None
            and not Path("/usr/sbin", name).exists()]


def unavailable_reason(*, install: bool = True) -> str | None:
    """Why this machine cannot run the cluster, or None when it can (installs Debian's slurm-wlm
    and munge with apt-get first when they are missing and we are root)."""
    if not hasattr(os, "geteuid") or not Path("/proc").is_dir():
        return "a SLURM cluster needs Linux"
    if os.geteuid() != 0:
        return "starting slurmd and munged needs root"
    if _missing_binaries() and install:
        if shutil.which("apt-get") is None:
            return f"SLURM binaries missing ({', '.join(_missing_binaries())}) and no apt-get"
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]):
            try:
                result = subprocess.run(["timeout", "-k", "10", "300", *command], env=env,
                                        capture_output=True, text=True)
            except OSError as error:
                return f"apt-get failed: {error}"
            if result.returncode != 0:
                return f"{' '.join(command)} failed: {(result.stdout + result.stderr)[-500:]}"
    missing = _missing_binaries()
    if missing:
        return f"SLURM binaries missing after install: {', '.join(missing)}"
    if (DEFAULT_CONF.exists() or DEFAULT_CONF.is_symlink()) and not _ours(DEFAULT_CONF):
        return f"this machine has its own SLURM config at {DEFAULT_CONF}: not replacing it"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as stopped.
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(") ", 1)[-1].startswith("Z"))


@dataclass
class SlurmCluster:
    """A running cluster: pass `env` to every SLURM client and Snakemake call that should use it."""

    root: Path
    node: str
    partition: str = PARTITION
    pid_files: list[Path] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    @classmethod
    def start(cls, root: Path | None = None, *, timeout: float = 60) -> SlurmCluster:
        """Write the config, start munged, slurmctld and slurmd, and wait until the node is idle.

        On any failure the daemons already started are stopped before the error propagates.
        """
        # munged refuses a socket in a folder that others cannot traverse (pytest's tmp is 0700).
        root = Path(root or tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
        root.mkdir(parents=True, exist_ok=True)
        cluster = cls(root=root, node=socket.gethostname().split(".")[0])
        try:
            cluster._write_config()
            cluster._link_default_config()
            cluster._start_daemons()
            cluster._wait_until_idle(timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _write_config(self) -> None:
        root = self.root
        for folder in ("munge", "state", "spool", "log", "dev"):
            (root / folder).mkdir(exist_ok=True)
        root.chmod(0o711)
        (root / "munge").chmod(0o711)
        key = root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        # A count-only GPU: slurmd drops GPUs without a device file, and wants a character
        # device; a node of /dev/null's numbers is one that nothing can use.
        gpu = root / "dev" / "gpu0"
        try:
            os.mknod(gpu, 0o644 | 0o020000, os.makedev(1, 3))
        except OSError:
            gpu.touch()  # slurmd logs "not a valid character device" but still counts it
        (root / "gres.conf").write_text(f"Name=gpu File={gpu}\n")
        self.conf.write_text(f"""\
ClusterName=lipsynctest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={root}/log/jobcomp.txt
MinJobAge=600
ReturnToService=2
GresTypes=gpu
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MB} Gres=gpu:1 State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")

    def _link_default_config(self) -> None:
        if DEFAULT_CONF.exists() or DEFAULT_CONF.is_symlink():
            if not _ours(DEFAULT_CONF):
                raise RuntimeError(f"{DEFAULT_CONF} exists and is not a link of these tests")
            DEFAULT_CONF.unlink()  # left by a run that was killed before it could clean up
        DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
        DEFAULT_CONF.symlink_to(self.conf)

    def _daemon(self, pid_file: Path, command: list[str]) -> None:
        self.pid_files.append(pid_file)
        # Daemons fork and keep no pipe of ours open; their logs go to files in root/log.
        subprocess.run(["timeout", "-k", "5", "30", *command], env=self.env, check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not pid_file.exists():
            raise RuntimeError(f"{command[0]} wrote no pid file {pid_file}\n{self.logs()}")

    def _start_daemons(self) -> None:
        munge = self.root / "munge"
        self._daemon(munge / "munged.pid", [
            "munged", f"--key-file={munge}/munge.key", f"--socket={munge}/munge.socket",
            f"--pid-file={munge}/munged.pid", f"--log-file={self.root}/log/munged.log",
            f"--seed-file={munge}/munged.seed"])
        self._daemon(self.root / "slurmctld.pid", ["slurmctld", "-f", str(self.conf)])
        self._daemon(self.root / "slurmd.pid", ["slurmd", "-f", str(self.conf), "-N", self.node])

    def _wait_until_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            result = self.client("sinfo", "--noheader", "--format=%T", check=False)
            state = result.stdout.strip()
            if state == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"node not idle after {timeout:.0f} s (state {state!r})\n{self.logs()}")

    def client(self, *args: str, check: bool = True,
               timeout: int = 30) -> subprocess.CompletedProcess:
        """Run a SLURM client command (squeue, scontrol, ...) against this cluster."""
        return subprocess.run(["timeout", "-k", "5", str(timeout), *args], env=self.env,
                              capture_output=True, text=True, check=check)

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still holds (finished ones for MinJobAge seconds), oldest first."""
        fields = ["JobID", "Name", "State", "Comment", "Partition", "NumCPUs", "MinMemory",
                  "TimeLimit", "tres-per-job", "tres-per-node", "WorkDir"]
        result = self.client("squeue", "--states=all", "--noheader", "--sort=i",
                             "--Format=" + ",".join(f"{name}:|" for name in fields))
        return [dict(zip(fields, (v.strip() for v in line.split("|")), strict=False))
                for line in result.stdout.splitlines() if line.strip()]

    def completion_records(self) -> list[dict[str, str]]:
        """The job completion log (jobcomp/filetxt): one record per finished job, kept for good."""
        path = self.root / "log" / "jobcomp.txt"
        if not path.exists():
            return []
        records = []
        for line in path.read_text().splitlines():
            pairs = (item.split("=", 1) for item in line.split() if "=" in item)
            records.append(dict(pairs))
        return records

    def logs(self, lines: int = 15) -> str:
        text = []
        for log in sorted((self.root / "log").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            text.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(text)

    def stop(self, timeout: float = 15) -> None:
        """Cancel leftover jobs, then stop every daemon this cluster started, by its pid file."""
        if any(p.exists() for p in self.pid_files[1:]):
            leftover = self.client("squeue", "--noheader", "--format=%i", check=False)
            ids = leftover.stdout.split()
            if ids:
                self.client("scancel", *ids, check=False)
        # Reverse start order: slurmd, slurmctld, then munged which they authenticate through.
        for pid_file in reversed(self.pid_files):
            if not pid_file.exists():
                continue
            try:
                pid = int(pid_file.read_text().split()[0])
            except (ValueError, IndexError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.pid_files.clear()
        if DEFAULT_CONF.is_symlink() and DEFAULT_CONF.readlink() == self.conf:
            DEFAULT_CONF.unlink()
