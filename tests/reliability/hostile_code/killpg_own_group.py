# hostile: killpg own group (exit 0 would mean the attack worked)
import os, signal
os.killpg(0, signal.SIGKILL)
