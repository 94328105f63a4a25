# hostile: raw socket module (exit 0 would mean the attack worked)
import sys
sys.modules.pop('socket', None)
import _socket
_socket.socket()
