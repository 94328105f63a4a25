# hostile: ctypes libc (exit 0 would mean the attack worked)
import ctypes
ctypes.CDLL(None).fork()
