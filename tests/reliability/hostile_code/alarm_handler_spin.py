# hostile: alarm handler spin (exit 0 would mean the attack worked)
import signal
signal.signal(signal.SIGALRM, lambda *a: None)
signal.alarm(1)
while True:
    pass
