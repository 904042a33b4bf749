"""A throw-away one-node SLURM cluster on this machine, for the slow suite's SLURM tests.

It installs nothing: where ``munged``, ``slurmctld`` and ``slurmd`` exist (Debian: ``munge`` and
``slurm-wlm``) and we are root, it writes a munge key and a minimal ``slurm.conf`` naming this host
(``hostname -s``) with its CPUs into a temporary dir (state, spool, logs, sockets there too, on free
ports), starts the three daemons in the foreground as child processes, waits until ``sinfo`` shows
the node idle, and at the end stops exactly the processes it started. Clients find it through
``SLURM_CONF`` in :attr:`SlurmCluster.env`. Otherwise :func:`unavailable_reason` says why not.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "sinfo", "scancel", "scontrol")


def unavailable_reason() -> Optional[str]:
    """Why a local SLURM cannot be started here, or None."""
    missing = [d for d in DAEMONS + CLIENTS if shutil.which(d) is None]
    if missing:
        return (f"SLURM/munge not installed (missing {', '.join(missing)}; Debian: apt-get install slurm-wlm munge, "
                "as utils/setup_env.sh does when root)")
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd/munged needs root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class SlurmCluster:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.procs: List[subprocess.Popen] = []
        self.host = subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()
        self.cpus = os.cpu_count() or 1
        self.conf = self.root / "slurm.conf"
        self.env: Dict[str, str] = {**os.environ, "SLURM_CONF": str(self.conf)}

    # ------------------------------------------------------------------ set-up
    def _write_files(self) -> None:
        r = self.root
        for d in ("munge", "state", "spool", "log", "run"):
            (r / d).mkdir(parents=True, exist_ok=True)
            os.chmod(r / d, 0o700)
        os.chmod(r, 0o755)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        mem_kb = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal")))
        self.conf.write_text(f"""# written by test/slurm_cluster.py
ClusterName=almtoktest
SlurmctldHost={self.host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={r / 'munge' / 'munge.socket'}
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MailProg=/bin/true
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}
SlurmdPidFile={r / 'run' / 'slurmd.pid'}
SlurmctldLogFile={r / 'log' / 'slurmctld.log'}
SlurmdLogFile={r / 'log' / 'slurmd.log'}
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=30
KillWait=5
NodeName={self.host} CPUs={self.cpus} RealMemory={mem_kb // 1024 // 2} State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")

    def _start(self, cmd: List[str], name: str) -> None:
        log = open(self.root / "log" / f"{name}.out", "w")
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def _log_tails(self) -> str:
        out = []
        for f in sorted((self.root / "log").iterdir()):
            out.append(f"---- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(out)

    def start(self, timeout: float = 60) -> "SlurmCluster":
        self._write_files()
        r = self.root
        self._start(["munged", "-F", "--force", f"--socket={r / 'munge' / 'munge.socket'}",
                     f"--key-file={r / 'munge' / 'munge.key'}", f"--pid-file={r / 'run' / 'munged.pid'}",
                     f"--log-file={r / 'log' / 'munged.log'}", f"--seed-file={r / 'munge' / 'munged.seed'}"],
                    "munged")
        deadline = time.time() + 10
        while not (r / "munge" / "munge.socket").exists():
            if time.time() > deadline or self.procs[0].poll() is not None:
                raise RuntimeError("munged did not start:\n" + self._log_tails())
            time.sleep(0.1)
        self._start(["slurmctld", "-D", "-c", "-i", "-f", str(self.conf)], "slurmctld")
        self._start(["slurmd", "-D", "-f", str(self.conf)], "slurmd")
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited at start-up:\n" + self._log_tails())
            proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], env=self.env, capture_output=True, text=True)
            state = proc.stdout.strip()
            if proc.returncode == 0 and state == "idle":
                return self._smoke_job(max(10.0, deadline - time.time()))
            time.sleep(0.5)
        raise RuntimeError(f"the node did not become idle in {timeout:.0f} s (sinfo: {state!r}):\n" + self._log_tails())

    def _smoke_job(self, timeout: float) -> "SlurmCluster":
        """The cluster counts as up only once a trivial job runs to the end (a node that looks idle
        but cannot launch jobs would otherwise hang the tests until their own timeouts)."""
        try:
            proc = subprocess.run(["sbatch", "--wait", "--quiet", "-o", "/dev/null", "--wrap", "true"], env=self.env,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            subprocess.run(["scancel", "--user", os.environ.get("USER", "root")], env=self.env, capture_output=True)
            raise RuntimeError(f"a trivial job did not finish in {timeout:.0f} s:\n" + self._log_tails())
        if proc.returncode != 0:
            raise RuntimeError(f"a trivial job failed ({proc.stderr.strip()}):\n" + self._log_tails())
        return self

    # ------------------------------------------------------------------ tear-down
    def stop(self) -> None:
        """Stop exactly the daemons started here (by pid): slurmd, slurmctld, then munged."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
