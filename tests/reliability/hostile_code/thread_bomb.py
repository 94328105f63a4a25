# hostile: thread bomb (exit 0 would mean the attack worked)
import threading, time
while True:
    threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()
