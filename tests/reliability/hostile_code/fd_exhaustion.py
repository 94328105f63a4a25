# hostile: fd exhaustion (exit 0 would mean the attack worked)
fs = [open('program.py') for _ in range(100000)]
