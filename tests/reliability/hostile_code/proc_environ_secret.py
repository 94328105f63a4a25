# hostile: proc environ secret (exit 0 would mean the attack worked)
import os, sys
for pid in os.listdir('/proc'):
    try:
        if b'FEM_TEST_SECRET' in open(f'/proc/{pid}/environ', 'rb').read():
            sys.exit(0)
    except OSError:
        pass
sys.exit(1)
