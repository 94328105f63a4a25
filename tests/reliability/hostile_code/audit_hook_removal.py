# hostile: audit hook removal (exit 0 would mean the attack worked)
import sys
sys.audit = lambda *a: None
sys.addaudithook(lambda *a: None)
import os
os.system('true')
