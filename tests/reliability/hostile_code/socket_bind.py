# hostile: socket bind (exit 0 would mean the attack worked)
import socket
s = socket.socket()
s.bind(('0.0.0.0', 0))
s.listen()
