# hostile: os system (exit 0 would mean the attack worked)
import os
assert os.system('touch ' + TARGET_DIR + '/by_system.txt') == 0
