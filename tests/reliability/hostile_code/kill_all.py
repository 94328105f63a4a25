# hostile: kill all (exit 0 would mean the attack worked)
import os, signal
os.kill(-1, signal.SIGKILL)
