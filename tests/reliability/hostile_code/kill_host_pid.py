# hostile: kill host pid (exit 0 would mean the attack worked)
import os, signal
os.kill(HOST_PID, signal.SIGKILL)
