# hostile: memory bomb (exit 0 would mean the attack worked)
x = []
while True:
    x.append(bytearray(64 * 1024 * 1024))
