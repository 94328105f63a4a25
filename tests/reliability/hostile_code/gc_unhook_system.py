# hostile: find the audit hook through gc, empty its list of refused events, then run a shell command that writes
# outside (exit 0 would mean the attack worked)
import gc
import os
for obj in gc.get_objects():
    if type(obj).__name__ == 'function' and obj.__name__ == 'hook' and obj.__closure__:
        for cell in obj.__closure__:
            if type(cell.cell_contents) is set:
                cell.cell_contents = set()
assert os.system('echo pwned > ' + TARGET_DIR + '/by_system.txt') == 0
