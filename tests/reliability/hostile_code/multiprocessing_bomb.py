# hostile: multiprocessing bomb (exit 0 would mean the attack worked)
import multiprocessing as mp
ps = [mp.Process(target=sum, args=([1],)) for _ in range(1000)]
for p in ps:
    p.start()
