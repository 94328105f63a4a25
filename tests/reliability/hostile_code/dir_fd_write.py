# hostile: create a file outside through dir_fd, past a path check (exit 0 would mean the attack worked)
import os
fd = os.open(TARGET_DIR, os.O_RDONLY)
out = os.open('written_by_sandbox.txt', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
os.write(out, b'pwned')
os.close(out)
