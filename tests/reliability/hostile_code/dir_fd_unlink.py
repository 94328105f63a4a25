# hostile: delete a file outside through dir_fd, past a path check (exit 0 would mean the attack worked)
import os
fd = os.open(TARGET_DIR, os.O_RDONLY)
os.unlink('canary.txt', dir_fd=fd)
