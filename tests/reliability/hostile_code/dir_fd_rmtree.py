# hostile: delete a directory tree outside through dir_fd, past a path check (exit 0 would mean the attack worked)
import os
import shutil
fd = os.open(TARGET_DIR, os.O_RDONLY)
shutil.rmtree('sub', dir_fd=fd)
