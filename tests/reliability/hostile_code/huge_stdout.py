# hostile: huge stdout (exit 0 would mean the attack worked)
import sys
line = 'x' * 65536 + '\n'
while True:
    sys.stdout.write(line)
