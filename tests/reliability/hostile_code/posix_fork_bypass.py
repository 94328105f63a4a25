# hostile: posix fork bypass (exit 0 would mean the attack worked)
import posix
while True:
    posix.fork()
