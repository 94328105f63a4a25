# hostile: kill parent (exit 0 would mean the attack worked)
import os, signal
os.kill(os.getppid(), signal.SIGKILL)
