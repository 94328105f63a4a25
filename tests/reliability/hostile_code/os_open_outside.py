# hostile: os open outside (exit 0 would mean the attack worked)
import os
fd = os.open(TARGET_DIR + '/canary.txt', os.O_WRONLY | os.O_TRUNC)
os.write(fd, b'pwned')
