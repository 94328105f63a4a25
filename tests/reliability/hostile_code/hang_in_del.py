# hostile: hang in del (exit 0 would mean the attack worked)
class Stuck:
    def __del__(self):
        while True:
            pass
keep = Stuck()
print('all tests passed')
raise SystemExit(0)
