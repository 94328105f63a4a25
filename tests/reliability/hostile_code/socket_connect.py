# hostile: socket connect (exit 0 would mean the attack worked)
import socket
s = socket.create_connection(('127.0.0.1', 22), timeout=1)
