# hostile: delete outside (exit 0 would mean the attack worked)
import os
os.remove(TARGET_DIR + '/canary.txt')
