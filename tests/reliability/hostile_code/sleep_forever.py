# hostile: sleep forever (exit 0 would mean the attack worked)
import time
time.sleep(10**6)
