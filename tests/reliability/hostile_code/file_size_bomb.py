# hostile: file size bomb (exit 0 would mean the attack worked)
with open('big.bin', 'wb') as f:
    while True:
        f.write(b'\0' * (1 << 20))
