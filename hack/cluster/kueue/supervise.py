"""Run kueue for kueue.sh up and stop it when its cluster goes away.

    supervise.py PIDFILE KUBECONFIG LOG COMMAND...

Started by kueue.sh in a session of its own. It closes every inherited descriptor past stderr
first: a caller's `flock` must not stay held for as long as kueue runs. It starts COMMAND with
its output appended to LOG, writes COMMAND's pid to PIDFILE, and stops COMMAND (SIGTERM, then
SIGKILL after 10 s) once KUBECONFIG is gone or replaced: `cluster.sh down` removes the cluster's
folder, pid files included, without knowing about kueue. It exits when COMMAND does.
"""

import os
import subprocess
import sys
import time


def main() -> int:
    pidfile, kubeconfig, log, *command = sys.argv[1:]
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    cluster = os.stat(kubeconfig).st_ino
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    with open(pidfile + ".tmp", "w") as f:
        f.write(f"{proc.pid}\n")
    os.replace(pidfile + ".tmp", pidfile)
    while proc.poll() is None:
        try:
            gone = os.stat(kubeconfig).st_ino != cluster
        except FileNotFoundError:
            gone = True
        if gone:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            break
        time.sleep(2)
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
