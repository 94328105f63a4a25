# hostile: deep recursion (exit 0 would mean the attack worked)
import sys
sys.setrecursionlimit(10**8)
def f(n):
    return f(n + 1) + 1
f(0)
