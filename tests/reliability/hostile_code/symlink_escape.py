# hostile: symlink escape (exit 0 would mean the attack worked)
import os
os.symlink(TARGET_DIR + '/canary.txt', 'link')
open('link', 'w').write('pwned')
