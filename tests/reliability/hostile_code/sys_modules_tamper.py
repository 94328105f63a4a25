# hostile: sys modules tamper (exit 0 would mean the attack worked)
import sys, types
fake = types.ModuleType('os')
sys.modules['os'] = fake
import posix
posix.system('touch ' + TARGET_DIR + '/tampered.txt')
