# hostile: hang in atexit (exit 0 would mean the attack worked)
import atexit, time
atexit.register(time.sleep, 10**6)
print('all tests passed')
