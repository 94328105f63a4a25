# hostile: infinite loop (exit 0 would mean the attack worked)
while True:
    pass
