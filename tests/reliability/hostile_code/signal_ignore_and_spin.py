# hostile: signal ignore and spin (exit 0 would mean the attack worked)
import signal
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGXCPU, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
while True:
    pass
